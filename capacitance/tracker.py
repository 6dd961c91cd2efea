"""Track β_eff of a capacitance probe while a model trains, and predict its final accuracy from it.

    tracker = BetaEffTracker(probe, variant="support", batch_size=256)
    for step, (x, y) in enumerate(batches):                       # the user's own training loop
        features = backbone(x)                                    # (B, D): the probe's input
        loss = cross_entropy(probe(features), y); ...
        tracker.collect(features, y)                              # keeps the last 256 samples, no copy
        if step in observation_steps:
            tracker.observe(epoch, val_accuracy)                  # β_eff on the collected window
    tracker.predict()                                             # Prediction(accuracy, std, flags, ...)

What is measured at each observation (the rules every candidate of a ranking shares, which is what makes
β_eff comparable across candidates):

* the probe's β_eff, its numerator and denominator (:func:`ncap.capacitance.beta_eff.capacitance`) for
  ``variant`` and, up to epoch ``extra_variants_until``, for each of ``extra_variants``; a variant not
  measured at an observation gets NaN placeholders, so every history list has one entry per observation;
* on the features passed to :meth:`observe`, or else on the **window**: the features of the last
  ``batch_size`` training samples passed to :meth:`collect` (what the probe was just trained on, so
  measuring costs no extra backbone pass);
* with the probe in eval mode (restored afterwards); features are cast to float32, labels to int64.

``enabled=False`` records the same observations (epoch, accuracy) with NaN β_eff: a baseline with
identical bookkeeping. :meth:`state_dict` / :meth:`load_state_dict` carry the settings and the history as
plain JSON-able Python (NaN ↔ None), so a tracker survives a checkpoint and resume; the window is not
saved (it refills from the next collected batches).
"""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from ncap.capacitance.beta_eff import MAX_MAGNITUDE_FLOPS, CapacitanceResult, capacitance
from ncap.capacitance.line_graph import VARIANTS, check_probe
from ncap.capacitance.predictor import Prediction, predict_final_accuracy

__all__ = ["BetaEffTracker"]

NAN = float("nan")
NOT_RECORDED = CapacitanceResult(NAN, NAN, NAN, NAN, "not-recorded")
STATE_VERSION = 1


def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [None if v is None or math.isnan(v) else float(v) for v in values]


def _none_to_nan(values: Sequence[float | None]) -> list[float]:
    return [NAN if v is None else float(v) for v in values]


class BetaEffTracker:
    """β_eff history of one probe during training, and Algorithm-1 predictions from it.

    Parameters
    ----------
    probe : nn.Module
        The capacitance probe: an MLP whose Linear layers (≥ 3 hidden + the head) chain in module order
        (:func:`ncap.capacitance.line_graph.check_probe`; ``support``/``magnitude`` also need element-wise
        activations only). Input features (B, D) with D = the first layer's ``in_features``.
    variant : {"default", "support", "magnitude"}
        The β_eff variant :meth:`predict` uses.
    extra_variants : sequence of str
        Variants recorded besides ``variant`` (duplicates of it are dropped).
    extra_variants_until : float, optional
        Record the extra variants only at observations with ``epoch ≤ extra_variants_until`` (cost).
    batch_size : int
        Samples β_eff is measured on: the window's length (the last ``batch_size`` collected samples).
    max_magnitude_flops : float
        Work limit of the magnitude variant per observation (:func:`capacitance`).
    t0 : int
        Leading observations :meth:`predict` skips.
    enabled : bool
        False: observations record epoch and accuracy only, β_eff entries are NaN.
    """

    def __init__(self, probe: nn.Module, *, variant: str = "support", extra_variants: Sequence[str] = (),
                 extra_variants_until: float | None = None, batch_size: int = 256,
                 max_magnitude_flops: float = MAX_MAGNITUDE_FLOPS, t0: int = 1, enabled: bool = True):
        check_probe(probe, elementwise_only=any(v != "default" for v in (variant, *extra_variants)))
        unknown = [v for v in (variant, *extra_variants) if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        self.probe = probe
        self.variant = variant
        self.extra_variants = tuple(v for v in dict.fromkeys(extra_variants) if v != variant)
        self.extra_variants_until = extra_variants_until
        self.batch_size = int(batch_size)
        self.max_magnitude_flops = float(max_magnitude_flops)
        self.t0 = int(t0)
        self.enabled = bool(enabled)
        self.seconds = 0.0  # wall time spent measuring (collect + observe)
        self.epochs: list[float] = []
        self.val_accuracy: list[float] = []
        self.n_samples: list[int] = []  # samples β_eff was measured on, per observation
        self.beta_eff: dict[str, list[float]] = {v: [] for v in self.variants}
        self.numerator: dict[str, list[float]] = {v: [] for v in self.variants}
        self.denominator: dict[str, list[float]] = {v: [] for v in self.variants}
        self._window: collections.deque[tuple[torch.Tensor, torch.Tensor]] = collections.deque()
        self._window_len = 0

    @property
    def variants(self) -> tuple[str, ...]:
        """``variant`` first, then the extra ones."""
        return (self.variant, *self.extra_variants)

    def __len__(self) -> int:
        return len(self.epochs)

    # ------------------------------------------------------------------------------------------ window
    def collect(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one training batch to the window: ``features`` (B, D) as the probe saw them, ``labels`` (B,).

        Only references are kept (detached, no copy), and only as many batches as the last ``batch_size``
        samples need."""
        if not self.enabled:
            return
        t0 = time.perf_counter()
        self._window.append((features.detach(), labels.detach()))
        self._window_len += len(labels)
        while self._window_len - len(self._window[0][1]) >= self.batch_size:
            self._window_len -= len(self._window.popleft()[1])
        self.seconds += time.perf_counter() - t0

    def window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``min(batch_size, collected)`` samples: features (n, D) float32 and labels (n,) int64."""
        if not self._window:
            raise ValueError("no features collected: call collect() during training or pass features to observe()")
        feats = torch.cat([f for f, _ in self._window])[-self.batch_size:]
        labels = torch.cat([y for _, y in self._window])[-self.batch_size:]
        return feats, labels

    # -------------------------------------------------------------------------------------- observations
    def variants_at(self, epoch: float) -> tuple[str, ...]:
        """The variants measured at an observation at ``epoch``."""
        extra_on = self.extra_variants_until is None or epoch <= self.extra_variants_until + 1e-9
        return self.variants if extra_on else (self.variant,)

    def observe(self, epoch: float, val_accuracy: float, features: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, CapacitanceResult]:
        """Record one observation: ``epoch`` (fractional), ``val_accuracy`` (fraction) and β_eff.

        β_eff is measured on ``features`` (B, D) with ``labels`` (B,) when given, else on the window.
        Returns ``{variant: CapacitanceResult}`` for every variant (NaN placeholders where not measured).
        """
        if (features is None) != (labels is None):
            raise ValueError("pass features and labels together (or neither, to use the window)")
        results: dict[str, CapacitanceResult] = {}
        n = 0
        if self.enabled:
            t0 = time.perf_counter()
            if features is None:
                features, labels = self.window()
            results = self._measure(features.detach().float(), labels.detach().long(), self.variants_at(epoch))
            n = len(labels)
            self.seconds += time.perf_counter() - t0
        self.epochs.append(float(epoch))
        self.val_accuracy.append(float(val_accuracy))
        self.n_samples.append(n)
        for v in self.variants:
            r = results.setdefault(v, NOT_RECORDED)
            self.beta_eff[v].append(r.beta_eff)
            self.numerator[v].append(r.numerator)
            self.denominator[v].append(r.denominator)
        return results

    def _measure(self, features, labels, variants) -> dict[str, CapacitanceResult]:
        was_training = self.probe.training
        self.probe.eval()
        try:
            return {v: capacitance(self.probe, features, labels, variant=v,
                                   max_magnitude_flops=self.max_magnitude_flops) for v in variants}
        finally:
            self.probe.train(was_training)

    # -------------------------------------------------------------------------------------- prediction
    def predict(self, variant: str | None = None, **kwargs) -> Prediction:
        """Algorithm 1 on the history (:func:`ncap.capacitance.predictor.predict_final_accuracy`):
        predicted final accuracy, its std, the method (``beta_extrapolation`` or a flagged
        ``fallback_last``) and flags. ``variant`` defaults to the tracker's; ``kwargs`` go to the predictor
        (``t0`` defaults to the tracker's). Raises ``ValueError`` with no observations."""
        v = variant or self.variant
        if v not in self.beta_eff:
            raise ValueError(f"variant {v!r} was not recorded (recorded: {', '.join(self.variants)})")
        kwargs.setdefault("t0", self.t0)
        return predict_final_accuracy(self.beta_eff[v], self.val_accuracy, denominators=self.denominator[v], **kwargs)

    # -------------------------------------------------------------------------------------- persistence
    def settings(self) -> dict:
        return {"variant": self.variant, "extra_variants": list(self.extra_variants),
                "extra_variants_until": self.extra_variants_until, "batch_size": self.batch_size,
                "max_magnitude_flops": self.max_magnitude_flops, "t0": self.t0, "enabled": self.enabled}

    def state_dict(self) -> dict:
        """Settings and history as plain Python (lists, dicts, floats; NaN as None): JSON-able."""
        return {"version": STATE_VERSION, "settings": self.settings(), "seconds": self.seconds,
                "epochs": list(self.epochs), "val_accuracy": list(self.val_accuracy), "n_samples": list(self.n_samples),
                **{key: {v: _nan_to_none(vals) for v, vals in getattr(self, key).items()}
                   for key in ("beta_eff", "numerator", "denominator")}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the history of :meth:`state_dict`. The settings must equal this tracker's (a history
        measured differently is not comparable); raises ``ValueError`` naming the first difference."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported tracker state version {state.get('version')!r} (expected {STATE_VERSION})")
        mine = self.settings()
        for key, value in state["settings"].items():
            if mine.get(key) != value:
                raise ValueError(f"tracker setting {key!r} differs: state has {value!r}, this tracker {mine.get(key)!r}")
        n = len(state["epochs"])
        series = {key: state[key] for key in ("beta_eff", "numerator", "denominator")}
        if any(len(state[k]) != n for k in ("val_accuracy", "n_samples")) or any(
                set(s) != set(self.variants) or any(len(vals) != n for vals in s.values()) for s in series.values()):
            raise ValueError("inconsistent tracker state: every history needs one entry per observation and variant")
        self.seconds = float(state.get("seconds", 0.0))
        self.epochs = [float(e) for e in state["epochs"]]
        self.val_accuracy = _none_to_nan(state["val_accuracy"])
        self.n_samples = [int(k) for k in state["n_samples"]]
        for key, s in series.items():
            setattr(self, key, {v: _none_to_nan(s[v]) for v in self.variants})
