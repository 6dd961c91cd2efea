"""Fine-tuning harness: train one candidate briefly and record its capacitance trajectory.

    dataset (train, val) → CandidateModel (backbone + NCP probe) → observations every `eval_every` steps:
        val_accuracy, train_loss (mean since the last observation), β_eff (+ numerator, denominator)
        on a fixed probe batch for every requested variant, and a bounded set of probe weight snapshots.

Every candidate gets the identical recipe (optimiser, lr, batch size, probe, β batch, seed), which is
what makes β_eff comparable across candidates. A candidate whose loss turns NaN/inf is returned with
``status="failed"`` and the reason; the caller goes on with the others.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ncap.capacitance.beta_eff import CapacitanceResult, capacitance
from ncap.models.recipe import Recipe

_NAN_RESULT = CapacitanceResult(float("nan"), float("nan"), float("nan"), float("nan"), "not-recorded")


class Cancelled(RuntimeError):
    """Raised when ``should_stop()`` asks the harness to stop."""


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
    beta_time_s: float = 0.0  # part of wall_time_s spent computing β_eff
    train_time_s: float = 0.0  # optimiser steps only
    feature_dim: int | None = None
    n_params: int | None = None
    pruning: dict | None = None  # pruning report of the probe (Recipe.prune_sparsity)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CandidateRun:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


@torch.no_grad()
def evaluate_accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on images ``x`` (N, C, H, W) with labels ``y`` (N,)."""
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return correct / len(y)


def _measure_beta(model, xb, yb, variants, max_magnitude_flops: float) -> dict:
    model.eval()
    with torch.no_grad():
        feats = model.backbone(xb)
    return {v: capacitance(model.probe, feats, yb, variant=v, max_magnitude_flops=max_magnitude_flops) for v in variants}


def fine_tune_candidate(
    spec,
    train,
    val,
    config: Recipe,
    *,
    progress: bool = True,
    on_epoch: Callable[[str, float, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    snapshots: list | None = None,
) -> CandidateRun:
    """Fine-tune ``spec`` on ``train`` for ``config.epochs`` and record its trajectory.

    Parameters
    ----------
    spec : models.candidates.CandidateSpec
    train, val : models.data.ImageDataset
    snapshots : list, optional
        If given, receives up to ``config.max_snapshots`` probe weight snapshots (dict of float32 numpy
        arrays, thinned evenly in time) — never the backbone's weights.
    """
    from ncap.models.candidates import build_candidate_model
    from ncap.models.data import prepare_batch

    t_start = time.perf_counter()
    run = CandidateRun(candidate=spec.name, beta_eff={v: [] for v in config.variants},
                       beta_numerator={v: [] for v in config.variants}, beta_denominator={v: [] for v in config.variants})
    device = resolve_device(config.device)
    _seed_all(config.seed)
    n_classes = len(train.class_names)
    model, data_cfg = build_candidate_model(spec, n_classes, probe_hidden=config.probe_hidden,
                                            freeze_backbone=config.freeze_backbone)
    model.to(device)
    run.feature_dim = model.probe.in_features
    run.n_params = sum(p.numel() for p in model.parameters())
    c, h, w = data_cfg["input_size"]
    if config.image_size:
        h = w = int(config.image_size)
    prep = {"input_size": (c, h, w), "mean": data_cfg["mean"], "std": data_cfg["std"], "device": device}
    xt, xv = prepare_batch(train.x, **prep), prepare_batch(val.x, **prep)
    yt, yv = torch.as_tensor(train.y, device=device), torch.as_tensor(val.y, device=device)
    gen = torch.Generator().manual_seed(config.seed)
    beta_idx = torch.randperm(len(yt), generator=gen)[: config.beta_batch_size].to(device)
    xb, yb = xt[beta_idx], yt[beta_idx]  # the fixed probe batch
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(yt) // config.batch_size)
    per_epoch = min(config.evals_per_epoch, steps_per_epoch)
    # observations at exact fractions j/per_epoch of every epoch (rounded to whole steps)
    observe_at = {e * steps_per_epoch + round(j * steps_per_epoch / per_epoch)
                  for e in range(config.epochs) for j in range(1, per_epoch + 1)}
    total_steps = steps_per_epoch * config.epochs
    all_snaps: list = []

    def observe(step: int, losses: list[float]) -> None:
        t0 = time.perf_counter()
        epoch_now = step / steps_per_epoch
        extra_on = config.extra_variants_until is None or epoch_now <= config.extra_variants_until + 1e-9
        betas = {}
        if config.track_beta:
            betas = _measure_beta(model, xb, yb, config.variants if extra_on else (config.variant,), config.max_magnitude_flops)
        nan = _NAN_RESULT
        run.beta_time_s += time.perf_counter() - t0
        for v in config.variants:
            r = betas.get(v, nan)
            run.beta_eff[v].append(r.beta_eff)
            run.beta_numerator[v].append(r.numerator)
            run.beta_denominator[v].append(r.denominator)
        run.epoch.append(epoch_now)
        run.val_accuracy.append(evaluate_accuracy(model, xv, yv))
        run.train_loss.append(float(np.mean(losses)) if losses else float("nan"))
        if snapshots is not None:
            all_snaps.append({f"{i}": m.weight.detach().cpu().numpy().astype(np.float32)
                              for i, m in enumerate(model.probe.linear_layers)})
        if on_epoch:
            on_epoch(spec.name, run.epoch[-1], {"val_accuracy": run.val_accuracy[-1], "train_loss": run.train_loss[-1],
                                                "beta_eff": run.beta_eff[config.variant][-1]})

    bar = tqdm(total=total_steps, desc=f"{spec.name}", unit="step", disable=not progress, leave=False)
    step, losses = 0, []
    try:
        for _epoch in range(config.epochs):
            perm = torch.randperm(len(yt), generator=gen).to(device)
            for i in range(steps_per_epoch):
                if should_stop and should_stop():
                    raise Cancelled(f"{spec.name}: cancelled at step {step}")
                idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
                model.train()
                if config.freeze_backbone:  # frozen means frozen: BatchNorm statistics too
                    model.backbone.eval()
                t0 = time.perf_counter()
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {step} (epoch {step / steps_per_epoch:.2f})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                run.train_time_s += time.perf_counter() - t0
                losses.append(loss.item())
                step += 1
                bar.update(1)
                if step in observe_at:
                    observe(step, losses)
                    bar.set_postfix(acc=f"{run.val_accuracy[-1]:.3f}", beta=f"{run.beta_eff[config.variant][-1]:.3g}")
                    losses = []
    except FloatingPointError as exc:
        run.status, run.error = "failed", str(exc)
    finally:
        bar.close()
    if config.prune_sparsity is not None and run.status == "ok":
        run.pruning = probe_pruning_report(model.probe, config.prune_sparsity, seed=config.seed)
    if snapshots is not None and all_snaps:
        keep = np.unique(np.linspace(0, len(all_snaps) - 1, min(config.max_snapshots, len(all_snaps))).round().astype(int))
        snapshots.extend(all_snaps[k] for k in keep)
    run.wall_time_s = time.perf_counter() - t_start
    return run


def probe_pruning_report(probe, sparsity: float, seed: int = 0) -> dict:
    """Magnitude-prune a copy of the fine-tuned probe (head kept dense) and report its degree
    distributions with power-law / truncated power-law fits per layer (``capacitance.network_measures``)."""
    import copy

    from ncap.capacitance.network import pruning_report
    from ncap.models.pruning import prune_magnitude

    pruned = copy.deepcopy(probe).cpu()
    prune_magnitude(pruned, sparsity)
    report = pruning_report(pruned, seed=seed, with_esd=True)
    report["sparsity_requested"] = sparsity
    return report
