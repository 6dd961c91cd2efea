"""Dynamic sparse training (DST) of MLPs and small CNNs: sparse initialisation, then every Δt optimiser steps
prune by magnitude and regrow by a rule (sources/002 §4.3), with the topology recorded at every update.

Pieces:

* :class:`DSTConfig` — every setting, validated (pydantic); the ``ncap sparse-train`` flags come from it.
* :func:`build_model` — ``mlp``, ``mlp:W1,W2,...`` or ``cnn`` from :func:`ncap.models.prune_pipeline.build_pruning_model`,
  optionally with LayerNorm before each hidden ReLU (sources/003 §2.6).
* :func:`sparsify` — layer densities (uniform / ER / ERK) and fan-in profiles of :mod:`ncap.models.sparse.init`;
  masks are the keep-mask buffers of :mod:`ncap.network.masks`. The output layer stays dense unless
  ``include_output``.
* :class:`DynamicSparsity` — the topology update as an optimiser *step post-hook* (``attach(optimizer)``): after
  every ``optimizer.step()`` it re-applies the masks, and every Δt steps it rewires each sparse layer
  (:func:`ncap.models.sparse.regrow.update_layer`) and records the topology (:class:`TopologyTracker`). Any
  training loop that calls ``optimizer.step()`` gets DST by attaching it; nothing else changes.
* :func:`train_dst` — a minimal mini-batch loop around it (SGD with Nesterov momentum, multi-step learning
  rate, as in sources/002 §5.1, which :mod:`ncap.models.training` does not schedule). The shared loop runs DST
  too: ``DynamicSparsity(...).attach(opt)`` then ``training.train(model, loader, settings, optimizer=opt)``
  (tests/test_sparse_regrow.py checks it).

Masking: weights are stored with their inactive entries at 0 and gradients are *not* masked, so after each
backward pass ``weight.grad`` is the dense gradient that RigL scores, and the SGD momentum buffer holds the
momentum of inactive weights that SNFS scores (Dettmers & Zettlemoyer 2019). The post-hook zeroes inactive
weights after every step. At an update, pruned and regrown weights are set to 0 and their momentum reset.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from tqdm.auto import tqdm

from ncap.models.pruning import accuracy
from ncap.models.sparse.init import (
    DENSITY_METHODS,
    PROFILES,
    fan_in_cv,
    fan_in_profile,
    init_sparse_weights,
    layer_densities,
    mask_from_fan_in,
    random_mask,
)
from ncap.models.sparse.regrow import REGROW_RULES, LayerUpdate, cosine_prune_rate, update_layer, zero_entries
from ncap.models.sparse.topology import DORMANT_THRESHOLDS, TopologyTracker
from ncap.network import get_mask, prunable_layers, set_mask

__all__ = ["RULES", "DSTConfig", "DynamicSparsity", "as_tensors", "build_model", "sparsify", "train_dst"]

RULES = ("dense", "static", *REGROW_RULES)


class DSTConfig(BaseModel):
    """One DST run. ``rule``: ``dense`` (no masks), ``static`` (masks never change), or a regrowth rule."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("mlp:256,256", description="'mlp', 'mlp:W1,W2,...' or 'cnn'")
    rule: Literal[RULES] = Field("gradient", description="dense, static, random (SET), gradient (RigL), momentum (SNFS)")  # type: ignore[valid-type]
    sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="fraction of the sparse layers' weights that are zero")
    density: Literal[DENSITY_METHODS] = Field("erk", description="layer densities: uniform, er or erk")  # type: ignore[valid-type]
    profile: str = Field("random", description="fan-in profile within a layer (random = Erdős–Rényi)")
    profile_cv: list[float] | None = Field(None, description="target fan-in CV (lognormal, powerlaw): one, or one per sparse layer")
    peaks: int = Field(1, ge=1, description="multipeak: number of peaks")
    sigma: float = Field(0.2, gt=0, description="bell / multipeak: peak width")
    spread: Literal["random", "even"] = Field("random", description="which inputs a neuron's fan-in connects to")
    min_fan_in: int = Field(1, ge=0, description="smallest fan-in a profile may give a neuron")
    weight_init: Literal["mean-fan-in", "per-neuron", "dense"] = Field(
        "mean-fan-in", description="He-normal with the layer's mean fan-in, per-neuron fan-in, or the module's own")
    include_output: bool = Field(False, description="make the output layer sparse too")
    layer_norm: bool = Field(False, description="MLPs: LayerNorm before each hidden ReLU (sources/003)")
    epochs: int = Field(20, ge=1, le=10000, description="training epochs")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    lr: float = Field(0.05, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (its buffer is what 'momentum' regrowth scores)")
    nesterov: bool = Field(True, description="Nesterov momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay")
    lr_milestones: list[float] = Field([0.5, 0.75], description="fractions of training where the LR drops 10x")
    delta_t: int | None = Field(None, ge=1, description="optimiser steps between topology updates (default: half an epoch)")
    prune_rate: float = Field(0.5, gt=0, le=1, description="initial prune fraction p0 of the active weights")
    update_until: float = Field(1.0, gt=0, le=1, description="fraction of training over which p(t) decays to 0 and updates happen")
    exclude_pruned: bool = Field(True, description="never regrow a slot pruned in the same update")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="held-out fraction (stratified) for accuracy")
    seed: int = Field(0, description="seed of the split, masks, weights and batches")
    track: bool = Field(True, description="record the topology at every update")
    kshell: bool = Field(True, description="k-shell decomposition at every update")
    dormant_thresholds: list[int] = Field(list(DORMANT_THRESHOLDS), description="absolute dormant-degree thresholds")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r}; choose from {', '.join(PROFILES)}")
        return v

    @field_validator("profile_cv", mode="before")
    @classmethod
    def _cv_list(cls, v):
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent(self):
        if self.profile in ("lognormal", "powerlaw") and not self.profile_cv:
            raise ValueError(f"profile {self.profile!r} needs profile_cv (target fan-in CV)")
        if not (self.model in ("mlp", "cnn") or self.model.startswith("mlp:")):
            raise ValueError(f"model must be 'mlp', 'mlp:W1,W2,...' or 'cnn', got {self.model!r}")
        return self


# ------------------------------------------------------------------------------------------------ models


def _insert_layer_norm(model: nn.Sequential) -> nn.Sequential:
    """The same MLP with ``nn.LayerNorm`` between each hidden Linear and its ReLU."""
    mods, prev = [], None
    for name, m in model.named_children():
        if isinstance(m, nn.ReLU) and isinstance(prev, nn.Linear):
            mods.append((f"norm{name.removeprefix('relu')}", nn.LayerNorm(prev.out_features)))
        mods.append((name, m))
        prev = m
    return nn.Sequential(OrderedDict(mods))


def build_model(config: DSTConfig, shape: tuple[int, int, int], num_classes: int):
    """``(model, transform, input_shape)`` for ``config.model`` on images of ``shape`` (C, H, W)."""
    from ncap.models.prune_pipeline import build_pruning_model

    model, tf, input_shape, _ = build_pruning_model(config.model, shape, num_classes, seed=config.seed)
    if config.layer_norm and isinstance(model, nn.Sequential) and config.model != "cnn":
        model = _insert_layer_norm(model)
    return model, tf, tuple(input_shape)


def sparsify(model: nn.Module, config: DSTConfig, input_shape) -> tuple[list[str], list[dict]]:
    """Give the sparse layers keep-masks and initial weights; returns their names and a row per layer.

    ``rule='dense'`` sets no masks but applies the same weight initialisation (full fan-in).
    """
    example = torch.zeros((1, *input_shape))
    layers = prunable_layers(model, example)
    chosen = layers if config.include_output or len(layers) == 1 else layers[:-1]
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    shapes = [tuple(m.weight.shape) for _, m in chosen]
    _dens, counts = layer_densities(shapes, 1.0 - config.sparsity, config.density)
    cvs = config.profile_cv or [None]
    rows = []
    for k, (name, m) in enumerate(chosen):
        if config.rule == "dense":
            mask = np.ones(shapes[k], bool)
        elif config.profile == "random":
            mask = random_mask(shapes[k], int(counts[k]), rng)
        else:
            n_out, n_in = shapes[k][0], int(np.prod(shapes[k][1:]))
            fan = fan_in_profile(config.profile, n_out, n_in, int(counts[k]), min_fan_in=config.min_fan_in,
                                 cv=cvs[min(k, len(cvs) - 1)], peaks=config.peaks, sigma=config.sigma)
            mask = mask_from_fan_in(fan, n_in, spread=config.spread, generator=rng).reshape(shapes[k])
        t = torch.from_numpy(mask).to(m.weight.device)
        init_sparse_weights(m, t, config.weight_init, generator=gen)
        if config.rule != "dense":
            set_mask(m, t)
        fan_in = mask.reshape(shapes[k][0], -1).sum(1)
        rows.append({"layer": name, "shape": list(shapes[k]), "density": float(mask.mean()),
                     "active": int(mask.sum()), "fan_in_cv": fan_in_cv(fan_in), "fan_in_max": int(fan_in.max())})
    return [n for n, _ in chosen], rows


# ------------------------------------------------------------------------------------------ the hook


class DynamicSparsity:
    """Keeps masks through optimiser steps and rewires every ``delta_t`` steps (see the module docstring).

    Parameters
    ----------
    model : the network; ``sparse`` names its masked layers
    rule : ``static`` or a regrowth rule of :mod:`ncap.models.sparse.regrow`
    delta_t, total_steps : update every ``delta_t`` steps while ``step < update_until · total_steps``
    prune_rate : p0 of the cosine schedule (decaying to 0 at ``update_until · total_steps``)
    tracker : a :class:`TopologyTracker` to record every update, or None
    """

    def __init__(self, model: nn.Module, sparse: list[str], *, rule: str, delta_t: int, total_steps: int,
                 prune_rate: float = 0.5, update_until: float = 1.0, exclude_pruned: bool = True, seed: int = 0,
                 tracker: TopologyTracker | None = None, steps_per_epoch: int | None = None):
        if rule not in ("static", *REGROW_RULES):
            raise ValueError(f"unknown rule {rule!r}: static or one of {REGROW_RULES}")
        by_name = dict(prunable_layers(model))
        self.layers = OrderedDict((n, by_name[n]) for n in sparse)
        self.rule, self.delta_t, self.prune_rate = rule, int(delta_t), float(prune_rate)
        self.end_step = int(update_until * total_steps)
        self.exclude_pruned, self.tracker = exclude_pruned, tracker
        self.steps_per_epoch = steps_per_epoch
        self.rng = np.random.default_rng(seed + 1)
        self.step = 0
        self._active: dict[str, np.ndarray] = {}  # flat active indices after the last update (masks change only here)
        self.timings: list[dict] = []
        self._handle = None

    def attach(self, optimizer: torch.optim.Optimizer) -> DynamicSparsity:
        """Run :meth:`after_step` after every ``optimizer.step()``."""
        self.optimizer = optimizer
        self._handle = optimizer.register_step_post_hook(lambda opt, *_a, **_k: self.after_step())
        self.apply_masks()
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def apply_masks(self) -> None:
        for m in self.layers.values():
            m.weight.mul_(get_mask(m))

    def after_step(self) -> None:
        self.apply_masks()
        self.step += 1
        if self.rule in REGROW_RULES and self.step % self.delta_t == 0 and self.step < self.end_step:
            self.update()

    def _score(self, module: nn.Module) -> torch.Tensor | None:
        if self.rule == "gradient":
            if module.weight.grad is None:
                raise RuntimeError("rule 'gradient' needs the weight gradient at the update (call after backward)")
            return module.weight.grad
        if self.rule == "momentum":
            state = self.optimizer.state.get(module.weight, {})
            buf = state.get("momentum_buffer", state.get("exp_avg"))
            if buf is None:
                raise RuntimeError("rule 'momentum' needs an optimiser with a momentum buffer (SGD momentum > 0, Adam)")
            return buf
        return None

    @torch.no_grad()
    def update(self) -> dict[str, LayerUpdate]:
        """One topology update of every sparse layer at the current step; recorded by the tracker."""
        t0 = time.perf_counter()
        frac = cosine_prune_rate(self.step, self.end_step, self.prune_rate)
        updates = {}
        for name, m in self.layers.items():
            upd = update_layer(m.weight, get_mask(m), frac, self.rule, score=self._score(m), rng=self.rng,
                               exclude_pruned=self.exclude_pruned, active=self._active.get(name))
            self._active[name] = upd.after
            self._reset_momentum(m, np.concatenate([upd.pruned, upd.grown]))
            updates[name] = upd
        t1 = time.perf_counter()
        if self.tracker is not None:
            grads = {n: m.weight.grad for n, m in self.layers.items() if m.weight.grad is not None}
            epoch = self.step / self.steps_per_epoch if self.steps_per_epoch else float("nan")
            self.tracker.record(step=self.step, epoch=epoch, updates=updates, grads=grads, prune_fraction=frac)
        self.timings.append({"step": self.step, "rewire_s": t1 - t0, "metrics_s": time.perf_counter() - t1,
                             "moved": int(sum(u.grown.size for u in updates.values()))})
        return updates

    def _reset_momentum(self, module: nn.Module, flat: np.ndarray) -> None:
        state = getattr(self, "optimizer", None) and self.optimizer.state.get(module.weight)
        if not state or flat.size == 0:
            return
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if isinstance(state.get(key), torch.Tensor):
                zero_entries(state[key], flat)


# ------------------------------------------------------------------------------------- training loop


def as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1] (:meth:`ImageDataset.float_images`) and labels as int64."""
    return torch.from_numpy(ds.float_images()), torch.as_tensor(ds.y).long()


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def _initial_gradient(model, x, y, transform, batch_size: int) -> None:
    """One forward-backward pass on the first batch (no step), so the initial record has gradient norms."""
    xb = x[:batch_size] if transform is None else transform(x[:batch_size])
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(xb), y[:batch_size]).backward()


def train_dst(config: DSTConfig, data=None, *, progress: bool = False, log=None) -> dict:
    """Train one DST run; returns ``{"config", "data", "init", "history", "accuracy", "topology", "fits",
    "timings", "seconds"}`` plus ``"_arrays"`` (the tracker's arrays, not JSON) and ``"_degrees"``,
    ``"_fits"`` (for plots). ``data`` is a :func:`ncap.models.data.load_dataset` source or an ImageDataset.
    """
    from ncap.models.data import ImageDataset, load_dataset, split_dataset

    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    ds = data if isinstance(data, ImageDataset) else load_dataset(data)
    tr, va = split_dataset(ds, config.val_fraction, config.seed)
    torch.manual_seed(config.seed)
    model, tf, input_shape = build_model(config, tuple(ds.x.shape[1:]), ds.num_classes)
    sparse, init_rows = sparsify(model, config, input_shape)
    (x, y), val = as_tensors(tr), as_tensors(va)
    spe = math.ceil(len(x) / config.batch_size)
    total = spe * config.epochs
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, round(f * config.epochs)) for f in config.lr_milestones], 0.1)
    tracker = None
    if config.rule != "dense" and config.track:
        tracker = TopologyTracker(model, sparse, input_shape=input_shape, thresholds=config.dormant_thresholds,
                                  with_kshell=config.kshell)
        _initial_gradient(model, x, y, tf, config.batch_size)
        tracker.record(step=0, epoch=0.0, grads={n: m.weight.grad for n, m in prunable_layers(model) if n in sparse})
    hook = None
    if config.rule != "dense":
        hook = DynamicSparsity(model, sparse, rule=config.rule, delta_t=config.delta_t or max(1, spe // 2),
                               total_steps=total, prune_rate=config.prune_rate, update_until=config.update_until,
                               exclude_pruned=config.exclude_pruned, seed=config.seed, tracker=tracker,
                               steps_per_epoch=spe).attach(opt)
    history = _fit(model, opt, sched, (x, y), val, tf, config, progress=progress, log=log)
    if hook is not None:
        hook.detach()
    out = {"config": config.model_dump(), "data": {"source": ds.source, "train": len(tr), "val": len(va),
                                                   "shape": list(ds.x.shape[1:]), "classes": ds.num_classes},
           "init": init_rows, "history": history, "accuracy": history[-1]["val_accuracy"],
           "steps_per_epoch": spe, "timings": hook.timings if hook else [], "topology": [], "fits": {}}
    if tracker is not None:
        degs, fits = tracker.fits()
        out.update(topology=tracker.rows, _arrays=tracker.arrays(), _degrees=degs, _fits=fits,
                   fits={ld.name: {k: v for k, v in f.items() if not k.startswith("_")} for ld, f in zip(degs, fits)})
    out["seconds"] = time.perf_counter() - t0
    return out


def _fit(model, opt, sched, train, val, tf, config: DSTConfig, *, progress: bool, log) -> list[dict]:
    """The epochs of :func:`train_dst`: mini-batch steps, then validation accuracy per epoch."""
    x, y = train
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(config.epochs), desc=f"{config.rule}/{config.profile}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for idx in _batches(len(x), config.batch_size, gen):
            xb = x[idx] if tf is None else tf(x[idx])
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        acc = accuracy(model, *val, transform=tf)
        history.append({"epoch": epoch + 1, "train_loss": total / count, "val_accuracy": acc})
        bar.set_postfix(loss=f"{total / count:.3f}", acc=f"{acc:.3f}")
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / count:.4f}, val accuracy {acc:.4f}")
    return history
