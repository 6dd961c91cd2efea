"""Statistics of the selection benchmark: ranking metrics per task, bootstrap intervals, paired counts.

A ranker's quality on one task is computed from its scores (n_candidates,) and the true accuracies
(n_candidates,) with :mod:`ncap.bench.evaluation` (Spearman ρ, weighted τ, top-1 regret in points).
Over several tasks we report the mean and a percentile bootstrap 95 % interval that resamples **tasks and
candidates**: each replicate draws tasks with replacement and, inside each drawn task, candidates with
replacement, recomputes the metric on the drawn candidates and averages over the drawn tasks. The
interval therefore covers both "other tasks like these" and "other candidates like these".
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ncap.bench.evaluation import spearman, top1_regret, weighted_tau

__all__ = ["METRICS", "bootstrap_interval", "metric_values", "paired_counts", "summarise"]

# name -> (function of (scores, truth), higher is better); regret in accuracy points
METRICS: dict[str, tuple[Callable, bool]] = {
    "rho": (spearman, True),
    "tau_w": (weighted_tau, True),
    "regret": (lambda s, t: 100.0 * top1_regret(s, t), False),
}


def metric_values(scores, truth) -> dict[str, float]:
    """Every metric of one ranker on one task; NaN where a metric is undefined (constant input, all NaN).

    scores : (n,) higher = better, NaN = no score (ranked last)
    truth : (n,) true final accuracies (fractions)
    """
    s, t = np.asarray(scores, float), np.asarray(truth, float)
    if np.isnan(s).all():
        return {m: float("nan") for m in METRICS}
    return {m: float(fn(s, t)) for m, (fn, _) in METRICS.items()}


def _replicate_metric(metric: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> float:
    fn = METRICS[metric][0]
    vals = []
    for i in rng.integers(0, len(pairs), len(pairs)):
        s, t = pairs[i]
        j = rng.integers(0, len(t), len(t))
        if np.ptp(t[j]) == 0 or np.isnan(s[j]).all():  # a draw of one distinct candidate says nothing
            continue
        v = fn(s[j], t[j])
        if np.isfinite(v):
            vals.append(v)
    return float(np.mean(vals)) if vals else float("nan")


def bootstrap_interval(metric: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0, resample_candidates: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of the task-mean of ``metric`` (a key of :data:`METRICS`).

    pairs : sequence of (scores (n_t,), truth (n_t,)), one per task
    resample_candidates : False resamples tasks only (candidates fixed).

    Hand-written because the resampling is two-level (tasks, then candidates inside each task), which
    ``scipy.stats.bootstrap`` does not do.
    """
    if not pairs:
        return float("nan"), float("nan")
    pairs = [(np.asarray(s, float), np.asarray(t, float)) for s, t in pairs]
    rng = np.random.default_rng(seed)
    if resample_candidates:
        reps = np.array([_replicate_metric(metric, pairs, rng) for _ in range(n_boot)])
    else:
        per_task = np.array([metric_values(s, t)[metric] for s, t in pairs])
        reps = np.array([np.nanmean(per_task[rng.integers(0, len(per_task), len(per_task))]) for _ in range(n_boot)])
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarise(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"rho", "rho_ci", "tau_w", "tau_w_ci", "regret", "regret_ci", "n_tasks"}``: task means (NaN tasks
    skipped) and bootstrap intervals of one ranker over the given tasks."""
    per_task = [metric_values(s, t) for s, t in pairs]
    out: dict = {"n_tasks": len(pairs)}
    for m in METRICS:
        vals = [d[m] for d in per_task if np.isfinite(d[m])]
        out[m] = float(np.mean(vals)) if vals else float("nan")
        out[f"{m}_ci"] = list(bootstrap_interval(m, pairs, n_boot=n_boot, seed=seed))
    return out


def paired_counts(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool = True,
                  tol: float = 0.0) -> dict[str, int]:
    """Win/tie/loss of ``a`` against ``b`` over paired cases (tasks, budgets): a case is a win when ``a``
    is better by more than ``tol``, a loss when worse by more than ``tol``, else a tie; a case where either
    value is NaN is not counted (``"n/a"``)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b) if higher_is_better else (b - a)
    return {"win": int(np.sum(ok & (d > tol))), "tie": int(np.sum(ok & (np.abs(d) <= tol))),
            "loss": int(np.sum(ok & (d < -tol))), "n/a": int(np.sum(~ok))}
