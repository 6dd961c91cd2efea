"""The stopping rule shared by the Optuna pruner and the Ray Tune scheduler.

A running trial has observations (β_eff_t, accuracy_t), t = 1..T. Algorithm 1
(:func:`ncap.capacitance.predictor.predict_final_accuracy`) turns them into a Gaussian predictive
distribution of the trial's final accuracy, N(μ, σ²) with σ ← max(σ, min_std). The incumbent is the best
value of a completed trial, y*, a measured number (σ* = 0 unless given). The rule:

    P(better) = P(X > y*) = Φ((μ − y*) / sqrt(σ² + σ*²))      X ~ N(μ, σ²)   (maximize; minimize flips the sign)
    stop the trial  ⇔  P(better) < threshold

and it never stops on a prediction it could not make: fewer than ``min_points`` usable observations, or the
predictor's flagged fallback (the last observed accuracy, which underestimates a still-learning trial), unless
``stop_on_fallback=True``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ncap.capacitance.predictor import Prediction, predict_final_accuracy

__all__ = ["DEFAULT_MIN_STD", "Verdict", "capacitance_verdict", "prob_beats"]

# validation accuracy is measured on a finite set: a predictive std below one point is overconfident
DEFAULT_MIN_STD = 0.01


def prob_beats(mean, std, target, target_std=0.0, *, maximize: bool = True):
    """P(X > Y) for independent X ~ N(mean, std²), Y ~ N(target, target_std²) (``maximize=False``: P(X < Y)).

    Broadcasts over array inputs (any matching shapes); returns a float for scalars. With zero total
    std the answer is 1, ½ or 0 (X is then a point: above, equal to or below Y).
    """
    mean, std, target, target_std = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, std, target, target_std)))
    if (std < 0).any() or (target_std < 0).any():
        raise ValueError("standard deviations must be >= 0")
    diff = (mean - target) if maximize else (target - mean)
    scale = np.sqrt(std**2 + target_std**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(scale > 0, norm.cdf(diff / np.where(scale > 0, scale, 1.0)), 0.5 * (1 + np.sign(diff)))
    return float(p) if p.ndim == 0 else p


@dataclass(frozen=True)
class Verdict:
    """Outcome of the rule for one trial at one step.

    ``stop``: stop (prune) the trial; ``prob_better``: P(better) (NaN when no prediction was made);
    ``prediction``: Algorithm 1's output, or None; ``reason``: one line for logs.
    """

    stop: bool
    prob_better: float
    prediction: Prediction | None
    reason: str


def capacitance_verdict(
    beta: Sequence[float],
    accuracy: Sequence[float],
    best: float,
    *,
    denominators: Sequence[float] | None = None,
    maximize: bool = True,
    threshold: float = 0.05,
    best_std: float = 0.0,
    t0: int = 1,
    min_points: int = 3,
    min_std: float = DEFAULT_MIN_STD,
    stop_on_fallback: bool = False,
) -> Verdict:
    """Apply the rule (module docstring) to one trial's observations.

    Parameters
    ----------
    beta, accuracy : sequences of float, shape (T,)
        β_eff and the metric at the trial's observations, in time order (NaN β = not measured there).
    best : float
        The incumbent: best final value among completed trials.
    denominators : sequence of float, shape (T,), optional
        1ᵀP1 per observation (drops points where β_eff is unstable).
    maximize : bool
        Direction of the metric.
    threshold : float in (0, 1)
        Stop when P(better) is below it.
    best_std : float
        Uncertainty of the incumbent's value (0: a measured number).
    t0, min_points : int
        Passed to Algorithm 1.
    min_std : float
        Floor on the predictive std.
    stop_on_fallback : bool
        Also stop on the predictor's flagged fallback (last observed value).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not np.isfinite(best):
        return Verdict(False, float("nan"), None, "no finite incumbent value")
    beta = np.asarray(beta, dtype=float).reshape(-1)
    if int(np.isfinite(beta).sum()) < min_points:
        return Verdict(False, float("nan"), None, f"fewer than {min_points} beta_eff observations")
    try:
        pred = predict_final_accuracy(beta, accuracy, t0=t0, denominators=denominators, min_points=min_points)
    except ValueError as exc:  # e.g. no finite accuracy yet
        return Verdict(False, float("nan"), None, f"no prediction: {exc}")
    if pred.method != "beta_extrapolation" and not stop_on_fallback:
        return Verdict(False, float("nan"), pred, f"predictor fell back ({'; '.join(pred.flags)})")
    prob = prob_beats(pred.accuracy, max(pred.std, min_std), best, best_std, maximize=maximize)
    stop = prob < threshold
    reason = (f"predicted {pred.accuracy:.4f} ± {max(pred.std, min_std):.4f} vs best {best:.4f}: "
              f"P(better) = {prob:.3g} {'<' if stop else '>='} {threshold}")
    return Verdict(bool(stop), prob, pred, reason)
