"""Fine-tuning harness: train one candidate briefly and record its capacitance trajectory.

    dataset (train, val) → CandidateModel (backbone + NCP probe) → timm transforms at the candidate's input
    size, streamed by DataLoaders → ncap.models.training.train → an observation every 1/evals_per_epoch
    epoch: val_accuracy, train_loss (mean since the last observation), β_eff (+ numerator, denominator)
    for every requested variant (ncap.capacitance.tracker.BetaEffTracker), a bounded set of probe snapshots.

Every candidate gets the identical recipe (optimiser, schedule, lr, batch size, probe, β_eff features, seed),
which is what makes β_eff comparable across candidates. β_eff is measured (``Recipe.beta_features``) on

* ``validation`` (default): the probe inputs of the first ``beta_batch_size`` images of the validation
  pass each observation makes anyway (the validation set in one seeded random order, so the same images
  for every candidate and every observation; eval mode, no augmentation; no extra backbone pass);
* ``fixed``: a fixed batch of training images passed through the backbone in eval mode at each
  observation (the measurement before; one extra forward pass of ``beta_batch_size`` images);
* ``window``: the features of the last ``beta_batch_size`` training images as the probe saw them (train
  mode, augmented; no extra pass, but other images at every observation: the noisiest).

``bench/results/tracking_overhead.md`` measures their cost and how their trajectories compare. A candidate
whose loss turns NaN/inf is returned with ``status="failed"`` and the reason; the caller goes on with the
others.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ncap.capacitance.probe import CandidateModel
from ncap.capacitance.tracker import BetaEffTracker
from ncap.models import training
from ncap.models.recipe import Recipe
from ncap.models.training import Cancelled, DivergedError, TrainSettings, evaluate_accuracy, seed_everything

__all__ = ["Cancelled", "CandidateRun", "CandidateSession", "evaluate_accuracy", "fine_tune_candidate", "probe_pruning_report",
           "resolve_device"]


@dataclass
class CandidateRun:
    """What the harness recorded for one candidate (one entry per observation)."""

    candidate: str
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    epoch: list[float] = field(default_factory=list)  # fractional epochs at each observation
    beta_eff: dict[str, list[float]] = field(default_factory=dict)  # variant -> values
    beta_numerator: dict[str, list[float]] = field(default_factory=dict)
    beta_denominator: dict[str, list[float]] = field(default_factory=dict)
    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    beta_time_s: float = 0.0  # part of wall_time_s spent measuring β_eff
    train_time_s: float = 0.0  # the training loop (data loading and optimiser steps), without observations
    train_cpu_s: float = 0.0  # this process's CPU time in the training loop (loader workers not included)
    cache_time_s: float = 0.0  # trainable top/probe: building (or opening) the activation cache
    cache_reused: bool | None = None  # trainable top/probe: True when every cache entry existed before
    cache_build_cpu_s: float = 0.0  # trainable top/probe: CPU seconds that built its cache entries (this run or
    # an earlier one): what the cache cost, whoever paid it
    cpu_time_s: float = 0.0  # this process's CPU time for the whole candidate (loader workers not included)
    obs_cpu_s: list[float] = field(default_factory=list)  # this process's CPU seconds since the start, per observation
    images_per_s: float | None = None  # training images per second of train_time_s
    feature_dim: int | None = None
    n_params: int | None = None
    input_size: list[int] | None = None  # (C, H, W) the candidate was fed
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> inference ms per image
    weights_remap: dict | None = None  # how a checkpoint with other key names was mapped by order and shape
    checkpoint_bytes: int | None = None  # size of the fine-tuned model written to ``checkpoint`` (None: not written)
    checkpoint_error: str | None = None  # why it was not written (e.g. too little disk space)
    pruning: dict | None = None  # pruning report of the probe (Recipe.prune_sparsity)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CandidateRun:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["latency_ms"] = {int(k): float(v) for k, v in (kw.get("latency_ms") or {}).items()}  # JSON keys are str
        return cls(**kw)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _beta_orders(seed: int, beta_batch_size: int, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """(the validation set's seeded order, whose first ``beta_batch_size`` images are the ``validation`` β_eff
    features; the training images of the ``fixed`` β_eff batch): the same for every candidate."""
    gen = torch.Generator().manual_seed(seed)
    val_order = torch.randperm(n_val, generator=gen).numpy()
    return val_order, torch.randperm(n_train, generator=gen)[:beta_batch_size].numpy()


@dataclass
class _Feeds:
    """What one candidate trains and is observed on: the model that trains, its loaders, the fixed β_eff batch,
    the validation labels of the β_eff subset, the input size, and the whole model (for latency)."""

    model: CandidateModel
    train_loader: object
    val_loader: object
    fixed: tuple | None
    val_labels: torch.Tensor
    input_size: tuple[int, int, int]
    whole: CandidateModel


def _full_feeds(model: CandidateModel, data_cfg: dict, train, val, config: Recipe, device: torch.device) -> _Feeds:
    """``trainable="all"``: images streamed through the whole model.

    The validation loader runs through ``val`` in a seeded random order, so its first ``beta_batch_size``
    images are the same random (≈ stratified) subset for every candidate: the ``validation`` β_eff features.
    """
    from ncap.models.data import candidate_transforms, make_loader, resolve_num_workers

    train_tf, eval_tf, input_size = candidate_transforms(data_cfg, image_size=config.image_size,
                                                         augmentation=config.augmentation)
    c, bs = input_size[0], config.batch_size
    common = {"num_workers": resolve_num_workers(config.num_workers, device), "pin_memory": device.type == "cuda",
              "seed": config.seed}
    train_loader = make_loader(train, train_tf, c, batch_size=bs, shuffle=True, drop_last=len(train) >= bs, **common)
    val_order, fixed_idx = _beta_orders(config.seed, config.beta_batch_size, len(train), len(val))
    val_loader = make_loader(val.select(val_order), eval_tf, c, batch_size=bs, **common)
    val_labels = torch.as_tensor(val.y[val_order[: config.beta_batch_size]])
    fixed = None
    if config.beta_features == "fixed" and config.track_beta:  # the same images for every candidate
        fixed = next(iter(make_loader(train.select(fixed_idx), eval_tf, c, batch_size=len(fixed_idx),
                                      num_workers=0)))
    return _Feeds(model, train_loader, val_loader, fixed, val_labels, input_size, model)


def _cached_feeds(model: CandidateModel, data_cfg: dict, train, val, config: Recipe, device: torch.device,
                  progress: bool, run: CandidateRun) -> _Feeds:
    """``trainable="top"``/``"probe"``: the frozen trunk's activations cached once (ncap.models.activation_cache),
    the top and the probe trained on them. Validation and the β_eff subset use the same seeded order as
    :func:`_full_feeds`; the ``fixed`` β_eff batch is those training images' cached view 0."""
    from ncap.models.activation_cache import CachedBatches, cached_activations
    from ncap.models.data import candidate_transforms, resolve_num_workers
    from ncap.models.partial import split_backbone

    augmentation = config.augmentation
    train_tf, eval_tf, input_size = candidate_transforms(data_cfg, image_size=config.image_size,
                                                         augmentation=augmentation)
    split = split_backbone(model.backbone, config.trainable, input_size)
    split.trunk.to(device, memory_format=torch.channels_last)  # 1.8x faster on CPU (activation_cache)
    split.top.to(memory_format=torch.channels_last)
    common = {"channels": input_size[0], "frozen": split.digest, "device": device, "batch_size": config.batch_size,
              "num_workers": resolve_num_workers(config.num_workers, device), "progress": progress,
              "max_bytes": int(config.activation_cache_gb * 1024**3), "desc": run.candidate}
    t0 = time.perf_counter()
    views = config.cached_views if augmentation != "none" else 1
    train_cache = cached_activations(split.trunk, train, train_tf, views=views, **common)
    val_cache = cached_activations(split.trunk, val, eval_tf, views=1, **common)
    run.cache_time_s = time.perf_counter() - t0
    run.cache_reused = train_cache.reused and val_cache.reused
    run.cache_build_cpu_s = train_cache.build_cpu_s + val_cache.build_cpu_s
    bs = config.batch_size
    val_order, fixed_idx = _beta_orders(config.seed, config.beta_batch_size, len(train), len(val))
    train_loader = CachedBatches(train_cache, train.y, batch_size=bs, shuffle=True, drop_last=len(train) >= bs,
                                 seed=config.seed)
    val_loader = CachedBatches(val_cache, val.y, batch_size=bs, order=val_order)
    fixed = None
    if config.beta_features == "fixed" and config.track_beta:
        idx = fixed_idx
        fixed = (torch.from_numpy(train_cache.data[0, idx].astype(np.float32)), torch.as_tensor(train.y[idx]))
    trained = CandidateModel(split.top, model.probe)
    whole = CandidateModel(torch.nn.Sequential(split.trunk, split.top), model.probe)
    return _Feeds(trained, train_loader, val_loader, fixed, torch.as_tensor(val.y[val_order[: config.beta_batch_size]]),
                  input_size, whole)


def fine_tune_candidate(spec, train, val, config: Recipe, **options) -> CandidateRun:
    """Fine-tune ``spec`` on ``train`` for ``config.epochs`` and record its trajectory: a
    :class:`CandidateSession` advanced to the end at once (the options are its own)."""
    session = CandidateSession(spec, train, val, config, **options)
    session.advance(config.epochs)
    return session.finish()


class CandidateSession:
    """One candidate's fine-tune, advanced in pieces: ``advance(epoch)`` trains (and observes) up to ``epoch``;
    ``finish()`` ends it and returns the :class:`CandidateRun`. Advancing to ``config.epochs`` at once is
    :func:`fine_tune_candidate`; successive halving and time budgets (``ncap.models.allocation``) advance
    several sessions in turns, each drawing from its own random generators, so a candidate trained in pieces
    records what it would record trained at once (bit for bit on CPU).

    Parameters
    ----------
    spec : models.candidates.CandidateSpec
    train, val : models.data.ImageDataset
        Streamed through the candidate's timm transforms (training: ``config.augmentation``).
    on_epoch : callable, optional
        ``on_epoch(name, epoch, {"val_accuracy", "train_loss", "beta_eff"})`` after each observation.
    snapshots : list, optional
        If given, receives up to ``config.max_snapshots`` probe weight snapshots (dict of float32 numpy
        arrays, thinned evenly in time) — never the backbone's weights.
    checkpoint : Path, optional
        Write the fine-tuned model there (:func:`~ncap.models.candidates.save_candidate_model`: the whole
        backbone, frozen part included, and the probe) when training succeeds.
    probe_state : dict, optional
        Start the probe from this state dict (continuing a kept model) instead of a fresh initialisation.
    """

    def __init__(self, spec, train, val, config: Recipe, *, progress: bool = True,
                 on_epoch: Callable[[str, float, dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, snapshots: list | None = None,
                 checkpoint: Path | None = None, probe_state: dict | None = None):
        from ncap.models.candidates import build_candidate_model

        self.t_start, self.c_start = time.perf_counter(), time.process_time()
        self.spec, self.train_data, self.config, self.checkpoint = spec, train, config, checkpoint
        self.snapshots, self.halted_at, self.halt_reason = snapshots, None, None
        self.run = run = CandidateRun(candidate=spec.name)
        self.device = device = resolve_device(config.device)
        seed_everything(config.seed)
        model, self.data_cfg = build_candidate_model(spec, len(train.class_names), probe_hidden=config.probe_hidden)
        self.built = model  # its backbone keeps the frozen part; with trainable top/probe the trained top is a copy
        if probe_state is not None:
            model.probe.load_state_dict(probe_state)
        run.n_params = sum(p.numel() for p in model.parameters())
        run.weights_remap = getattr(model.backbone, "ncap_weight_remap", None)
        if config.trainable == "all":
            self.feeds = _full_feeds(model, self.data_cfg, train, val, config, device)
        else:
            self.feeds = _cached_feeds(model, self.data_cfg, train, val, config, device, progress, run)
        model = self.feeds.model
        run.feature_dim, run.input_size = model.probe.in_features, list(self.feeds.input_size)
        self.tracker = BetaEffTracker(
            model.probe, variant=config.variant, extra_variants=config.extra_variants,
            extra_variants_until=config.extra_variants_until, batch_size=config.beta_batch_size,
            max_magnitude_flops=config.max_magnitude_flops, t0=config.t0, enabled=config.track_beta)
        self.observer = _Observer(run, model, self.tracker, (self.feeds.val_loader, self.feeds.val_labels),
                                  self.feeds.fixed, config, device, len(self.feeds.train_loader), on_epoch, snapshots)
        self.observer.cpu_start = self.c_start
        self.loop = training.TrainingLoop(model, self.feeds.train_loader, TrainSettings.from_recipe(config),
                                          device=device, on_step=self.observer.on_step, should_stop=should_stop,
                                          progress=progress, desc=spec.name, isolate_rng=True)
        self._own = [time.perf_counter() - self.t_start, time.process_time() - self.c_start]  # this session's s, CPU s
        self._left = (time.perf_counter(), time.process_time())  # when it last handed over

    def _resume_clock(self) -> None:
        """Leave out of this run's times (and its per-observation CPU seconds) what ran since it handed over."""
        self.observer.cpu_start += time.process_time() - self._left[1]

    def _pause_clock(self, t: float, c: float) -> None:
        now = (time.perf_counter(), time.process_time())
        self._own[0] += now[0] - t
        self._own[1] += now[1] - c
        self._left = now

    @property
    def epoch(self) -> float:
        """Epochs trained so far."""
        return self.loop.result.steps / self.loop.steps_per_epoch

    def advance(self, epoch: float, pause: Callable[[], bool] | None = None) -> None:
        """Train up to ``epoch`` (whole steps; at most ``config.epochs``), or until ``pause()`` says so before a
        step. A diverging loss marks the run failed; :class:`Cancelled` propagates."""
        if self.failed:
            return
        self._resume_clock()
        t, c = time.perf_counter(), time.process_time()
        hook = self.loop.model.probe.register_forward_pre_hook(self.observer.see_features)
        try:
            result = self.loop.run(round(epoch * self.loop.steps_per_epoch), pause=pause)
            self.run.train_time_s, self.run.train_cpu_s = result.seconds, result.cpu_seconds
            self.run.images_per_s = result.images_per_s
        except DivergedError as exc:
            self.run.status, self.run.error = "failed", str(exc)
        finally:
            hook.remove()
            self._pause_clock(t, c)

    @property
    def failed(self) -> bool:
        return self.run.status != "ok"

    def observed(self, upto: float | None = None) -> dict[str, list[float]]:
        """The observations so far with epoch ≤ ``upto`` (default all): ``val_accuracy``, ``beta_eff``,
        ``beta_denominator`` (of ``config.variant``) and ``train_loss``, one entry per observation."""
        t, v = self.tracker, self.config.variant
        n = len(t.epochs) if upto is None else sum(e <= upto + 1e-9 for e in t.epochs)
        return {"val_accuracy": list(t.val_accuracy[:n]), "beta_eff": list(t.beta_eff.get(v, [])[:n]),
                "beta_denominator": list(t.denominator.get(v, [])[:n]), "train_loss": list(self.run.train_loss[:n])}

    def halt(self, reason: str) -> None:
        """Train no further: :meth:`finish` records the epoch and ``reason`` (the first one given)."""
        if self.halted_at is None:
            self.halted_at, self.halt_reason = self.epoch, reason

    def finish(self) -> CandidateRun:
        """The recorded run: trajectories, pruning report, snapshots, latency and the kept model."""
        run = self.run
        t, c = time.perf_counter(), time.process_time()
        self._record()
        if self.checkpoint is not None and run.status == "ok":
            self._keep()
        self._pause_clock(t, c)
        run.wall_time_s, run.cpu_time_s = self._own
        return run

    def _record(self) -> None:
        """After training: the tracker's trajectories into the run, the pruning report, the thinned probe
        snapshots and the whole model's latency."""
        run, tracker, observer, feeds, config = self.run, self.tracker, self.observer, self.feeds, self.config
        run.epoch, run.val_accuracy = tracker.epochs, tracker.val_accuracy
        run.beta_eff, run.beta_numerator, run.beta_denominator = tracker.beta_eff, tracker.numerator, tracker.denominator
        run.beta_time_s = tracker.seconds + observer.fixed_seconds
        if config.prune_sparsity is not None and run.status == "ok":
            run.pruning = probe_pruning_report(feeds.model.probe, config.prune_sparsity, seed=config.seed)
        if self.snapshots is not None and observer.snaps:
            n = len(observer.snaps)
            keep = np.unique(np.linspace(0, n - 1, min(config.max_snapshots, n)).round().astype(int))
            self.snapshots.extend(observer.snaps[k] for k in keep)
        if config.measure_latency:
            from ncap.models.latency import measure_latency

            run.latency_ms = measure_latency(feeds.whole, tuple(feeds.input_size), self.device)

    def _keep(self) -> None:
        """Write the fine-tuned candidate to the checkpoint path: the backbone's state (the trained top's tensors
        over the frozen ones when only the top trained) and the probe, with what it takes to use it."""
        from ncap.models.candidates import save_candidate_model

        run, feeds, data_cfg = self.run, self.feeds, self.data_cfg
        state = {**self.built.backbone.state_dict(), **feeds.model.backbone.state_dict()}
        meta = {"timm_kwargs": self.spec.kwargs or {}, "class_names": list(self.train_data.class_names),
                "recipe": self.config.run_dict(),
                "data_config": {"input_size": run.input_size, **{k: list(v) if isinstance(v, tuple) else v
                                                                 for k, v in data_cfg.items() if k in _TRANSFORM_KEYS}},
                "input_size": run.input_size, "val_accuracy": run.val_accuracy[-1] if run.val_accuracy else None}
        try:
            run.checkpoint_bytes = save_candidate_model(state, feeds.model.probe, self.checkpoint, spec=self.spec,
                                                        metadata=meta)
        except OSError as exc:
            run.checkpoint_error = str(exc)


_TRANSFORM_KEYS = ("interpolation", "mean", "std", "crop_pct", "crop_mode")  # timm's create_transform arguments


def observation_steps(config: Recipe, steps_per_epoch: int) -> set[int]:
    """The optimiser steps (1-based) after which the harness observes: the ends of each 1/evals_per_epoch of an
    epoch, or ``config.observe_at_epochs`` rounded to whole steps (at least step 1)."""
    if config.observe_at_epochs is not None:
        return {max(1, round(e * steps_per_epoch)) for e in config.observe_at_epochs}
    per_epoch = min(config.evals_per_epoch, steps_per_epoch)
    return {e * steps_per_epoch + round(j * steps_per_epoch / per_epoch)
            for e in range(config.epochs) for j in range(1, per_epoch + 1)}


class _Observer:
    """The harness's per-step callback: records an observation at the steps that end each 1/evals_per_epoch
    of an epoch (rounded to whole steps) and hands the tracker the features of ``config.beta_features``.

    A forward pre-hook on the probe (:meth:`see_features`) sees every probe input: during the observation's
    validation pass it keeps those of the first ``beta_batch_size`` validation images (``validation``);
    during training steps the tracker collects the batch (``window``)."""

    def __init__(self, run: CandidateRun, model, tracker: BetaEffTracker, val, fixed, config: Recipe,
                 device: torch.device, steps_per_epoch: int, on_epoch, snapshots):
        self.run, self.model, self.tracker, self.config = run, model, tracker, config
        self.val_loader, self.val_labels = val[0], val[1].to(device)
        self.device, self.steps_per_epoch, self.on_epoch = device, steps_per_epoch, on_epoch
        self.mode = config.beta_features if config.track_beta else "off"
        self.fixed = None if fixed is None else (fixed[0].to(device), fixed[1].to(device))
        self.observe_at = observation_steps(config, steps_per_epoch)
        self.snaps: list | None = [] if snapshots is not None else None
        self.features: torch.Tensor | None = None
        self.val_features: list[torch.Tensor] | None = None  # filled during a validation pass
        self.losses: list[float] = []
        self.fixed_seconds = 0.0
        self.cpu_start = time.process_time()

    def see_features(self, _probe, args) -> None:
        self.features = args[0]
        kept = self.val_features
        if kept is not None and sum(len(f) for f in kept) < len(self.val_labels):
            kept.append(args[0].detach())

    def on_step(self, info) -> dict | None:
        self.losses.append(info.loss)
        if self.mode == "window":
            self.tracker.collect(self.features, info.labels)
        if info.step not in self.observe_at:
            return None
        self.observe(info.step / self.steps_per_epoch)
        return {"acc": f"{self.tracker.val_accuracy[-1]:.3f}", "beta": f"{self.tracker.beta_eff[self.config.variant][-1]:.3g}"}

    def observe(self, epoch: float) -> None:
        self.val_features = [] if self.mode == "validation" else None
        acc = evaluate_accuracy(self.model, self.val_loader, device=self.device, amp=self.config.amp)
        feats, labels = self.beta_inputs()
        self.tracker.observe(epoch, acc, feats, labels)
        self.run.train_loss.append(float(np.mean(self.losses)) if self.losses else float("nan"))
        self.run.obs_cpu_s.append(time.process_time() - self.cpu_start)
        self.losses = []
        if self.snaps is not None:
            self.snaps.append({f"{i}": m.weight.detach().cpu().numpy().astype(np.float32)
                               for i, m in enumerate(self.model.probe.linear_layers)})
        if self.on_epoch:
            self.on_epoch(self.run.candidate, epoch, {"val_accuracy": acc, "train_loss": self.run.train_loss[-1],
                                                      "beta_eff": self.tracker.beta_eff[self.config.variant][-1]})

    def beta_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(features, labels) for the tracker; (None, None) = its window (or nothing when tracking is off)."""
        if self.mode == "validation":
            feats, self.val_features = torch.cat(self.val_features)[: len(self.val_labels)], None
            return feats, self.val_labels[: len(feats)]
        if self.mode == "fixed":
            t0 = time.perf_counter()
            self.model.eval()
            with torch.no_grad():
                feats = self.model.backbone(self.fixed[0])
            self.fixed_seconds += time.perf_counter() - t0
            return feats, self.fixed[1]
        return None, None


def probe_pruning_report(probe, sparsity: float, seed: int = 0) -> dict:
    """Magnitude-prune a copy of the fine-tuned probe (head kept dense) and report its degree
    distributions with power-law / truncated power-law fits per layer
    (``ncap.network.pruning_report``)."""
    import copy

    from ncap.models.pruning import prune_magnitude
    from ncap.network import pruning_report

    pruned = copy.deepcopy(probe).cpu()
    prune_magnitude(pruned, sparsity)
    report = pruning_report(pruned, seed=seed, with_esd=True)
    report["sparsity_requested"] = sparsity
    return report
