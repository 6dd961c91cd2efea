"""What a ranking run will cost, before it starts: wall time, and the activation cache's disk.

For each candidate, a random-weight copy of its architecture is timed at the size the run feeds it, on the
run's device (a few seconds per candidate)::

    trainable all        epochs × n_train × (forward + backward of the whole model, per image)
    trainable top/probe  (views × n_train + n_val) × (trunk forward)              caching, once
                         + epochs × n_train × (forward + backward of the top and the probe)
    every mode           + observations × n_val × (forward without gradients of what trains)

timed on batches of :data:`TIMING_BATCH` images after one untimed batch. Decoding and augmentation run in
loader workers alongside and are not counted, nor are β_eff and the latency measurement (about a second
per observation): the estimate is of the compute, and ``ncap rank`` prints it as such. A cache entry that
exists already makes the run shorter than its estimate.

Disk: an entry holds ``views × n_train + n_val`` float16 activations of the trunk's output shape per
candidate (:func:`ncap.models.activation_cache.entry_bytes`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["TIMING_BATCH", "CandidateEstimate", "RunEstimate", "estimate_run"]

TIMING_BATCH = 16


@dataclass
class CandidateEstimate:
    """Seconds per phase (``caching``, ``training``, ``validation``) and cache bytes of one candidate, or the
    reason it cannot run in this mode (``problem``)."""

    candidate: str
    input_size: tuple[int, int, int] | None = None  # (C, H, W) the run will feed it
    seconds: dict[str, float] = field(default_factory=dict)
    cache_bytes: int = 0
    problem: str | None = None

    @property
    def total_s(self) -> float:
        return float(sum(self.seconds.values()))


@dataclass
class RunEstimate:
    candidates: list[CandidateEstimate]

    @property
    def total_s(self) -> float:
        return float(sum(c.total_s for c in self.candidates))

    @property
    def cache_bytes(self) -> int:
        return int(sum(c.cache_bytes for c in self.candidates))

    @property
    def largest_entry_bytes(self) -> int:
        """The largest single candidate's cache (what the cache's bound must hold at once)."""
        return max((c.cache_bytes for c in self.candidates), default=0)

    def describe(self) -> str:
        """One line per candidate and a total, for the terminal."""
        lines = [f"estimated compute: ~{_minutes(self.total_s)} in total"
                 + (f", activation cache ~{self.cache_bytes / 1024**3:.2f} GB" if self.cache_bytes else "")]
        for c in self.candidates:
            if c.problem:
                lines.append(f"  {c.candidate}: refused ({c.problem})")
                continue
            parts = ", ".join(f"{k} {_minutes(v)}" for k, v in c.seconds.items() if v > 0)
            lines.append(f"  {c.candidate}: ~{_minutes(c.total_s)} ({parts})")
        return "\n".join(lines)


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _per_image_s(fn, x: torch.Tensor) -> float:
    """Seconds per image of ``fn(x)``: one untimed call, then one timed call."""
    fn(x)
    t0 = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t0) / len(x)


def _train_step(module: torch.nn.Module):
    def step(x: torch.Tensor) -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        module(x).float().sum().backward()
    return step


def _no_grad(module: torch.nn.Module):
    def forward(x: torch.Tensor) -> None:
        module.eval()
        with torch.no_grad():
            module(x)
    return forward


def _time_candidate(entry: str, recipe, n_train: int, n_val: int, n_classes: int,
                    device: torch.device) -> CandidateEstimate:
    from ncap.capacitance.probe import CandidateModel, NeuralCapacitanceProbe
    from ncap.models.activation_cache import entry_bytes
    from ncap.models.candidates import CandidateSpec, create_backbone
    from ncap.models.partial import SplitError, split_backbone
    from ncap.models.registry import candidate_config

    described = candidate_config(entry)  # a zoo model's create arguments carry its native (pretraining) size
    backbone, dim, cfg = create_backbone(CandidateSpec(entry, described.arch, source="random",
                                                       kwargs=described.kwargs))
    c, h, w = cfg["input_size"]
    if recipe.image_size:
        h = w = recipe.image_size
    probe = NeuralCapacitanceProbe(dim, max(n_classes, 2), recipe.probe_hidden)
    x = torch.randn(TIMING_BATCH, c, h, w, device=device)
    est = CandidateEstimate(entry, (int(c), int(h), int(w)))
    observations = recipe.epochs * recipe.evals_per_epoch if recipe.observe_at_epochs is None else len(recipe.observe_at_epochs)
    if recipe.trainable == "all":
        model = CandidateModel(backbone, probe).to(device)
        est.seconds["training"] = recipe.epochs * n_train * _per_image_s(_train_step(model), x)
        est.seconds["validation"] = observations * n_val * _per_image_s(_no_grad(model), x)
        return est
    try:
        split = split_backbone(backbone.to(device), recipe.trainable, (c, h, w))
    except SplitError as exc:
        est.problem = str(exc)
        return est
    split.trunk.to(memory_format=torch.channels_last)  # as the harness runs them
    split.top.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        act = split.trunk(x)
    act = act.contiguous(memory_format=torch.channels_last) if act.ndim == 4 else act
    views = recipe.cached_views if recipe.augmentation != "none" else 1
    top = CandidateModel(split.top, probe).to(device)
    est.seconds["caching"] = (views * n_train + n_val) * _per_image_s(split.trunk, x)
    est.seconds["training"] = recipe.epochs * n_train * _per_image_s(_train_step(top), act)
    est.seconds["validation"] = observations * n_val * _per_image_s(_no_grad(top), act)
    est.cache_bytes = entry_bytes(tuple(act.shape[1:]), n_train, views) + entry_bytes(tuple(act.shape[1:]), n_val, 1)
    return est


def estimate_run(candidates: str | Sequence[str] | None, recipe, data) -> RunEstimate:
    """Estimate ``recipe`` (a :class:`~ncap.models.recipe.Recipe`) on every candidate entry (None: the demo
    zoo) for a dataset of shape ``data`` (:class:`~ncap.models.memory.DatasetShape`); see the module doc."""
    from ncap.models.harness import resolve_device
    from ncap.models.registry import candidate_entries

    n_val = max(1, round(recipe.val_fraction * data.n_images))
    n_train = max(1, data.n_images - n_val)
    device = resolve_device(recipe.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = [_time_candidate(e, recipe, n_train, n_val, data.n_classes, device) for e in candidate_entries(candidates)]
    return RunEstimate(out)

