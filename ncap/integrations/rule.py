"""The stopping rule shared by the Optuna pruner and the Ray Tune scheduler.

A running trial has T observations (β_eff_t, accuracy_t). The incumbent is the completed trial with the best
final value. Algorithm 1 (:func:`ncap.capacitance.predictor.predict_final_accuracy`) turns the trial's T
observations into a Gaussian N(μ, σ²) of its final accuracy, and the incumbent's *first T* observations into
N(μ*, σ*²) (both σ floored at ``min_std``). The rule:

    P(better) = P(X > X*) = Φ((μ − μ*) / sqrt(σ² + σ*²))     X ~ N(μ, σ²), X* ~ N(μ*, σ*²)   (minimize: flipped)
    stop the trial  ⇔  P(better) < threshold

Why the incumbent's prediction and not its measured final value: Algorithm 1 extrapolates to β_eff = 0 (a
converged probe), not to the trial's budget, and from a few early epochs its mean is biased (on the AutoML
benchmark, 5-8 accuracy points low at 4-10 of 20 epochs, with a std of 1-3 points: compared with measured
values it pruned 29 of 30 configurations, the best one included; ``bench/results/automl``). Comparing the two
predictions made from the same number of observations cancels a bias shared by both trials.

The rule never stops on a prediction it could not make: fewer than ``min_points`` usable observations, or
the predictor's flagged fallback (the last observed accuracy) for either trial, unless ``stop_on_fallback``.
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

    ``stop``: stop (prune) the trial; ``prob_better``: P(better) (NaN when no comparison was made);
    ``prediction`` / ``incumbent``: Algorithm 1's outputs for the trial and for the incumbent's first T
    observations (None where not made); ``reason``: one line for logs.
    """

    stop: bool
    prob_better: float
    prediction: Prediction | None
    incumbent: Prediction | None
    reason: str


def _predict(beta, accuracy, denominators, t0: int, min_points: int) -> tuple[Prediction | None, str]:
    beta = np.asarray(beta, dtype=float).reshape(-1)
    if int(np.isfinite(beta).sum()) < min_points:
        return None, f"fewer than {min_points} beta_eff observations"
    try:
        return predict_final_accuracy(beta, accuracy, t0=t0, denominators=denominators, min_points=min_points), ""
    except ValueError as exc:  # e.g. no finite accuracy yet
        return None, f"no prediction: {exc}"


def capacitance_verdict(
    beta: Sequence[float],
    accuracy: Sequence[float],
    incumbent_beta: Sequence[float],
    incumbent_accuracy: Sequence[float],
    *,
    denominators: Sequence[float] | None = None,
    incumbent_denominators: Sequence[float] | None = None,
    maximize: bool = True,
    threshold: float = 0.05,
    t0: int = 1,
    min_points: int = 3,
    min_std: float = DEFAULT_MIN_STD,
    stop_on_fallback: bool = False,
) -> Verdict:
    """Apply the rule (module docstring) to one trial's observations against the incumbent's.

    Parameters
    ----------
    beta, accuracy : sequences of float, shape (T,)
        The trial's β_eff and metric per observation, in time order (NaN β = not measured there).
    incumbent_beta, incumbent_accuracy : sequences of float, shape (T_inc,)
        The incumbent's, in time order; its first min(T, T_inc) observations are used.
    denominators, incumbent_denominators : sequences of float, optional
        1ᵀP1 per observation (points where it nearly vanishes are dropped: β_eff is unstable there).
    maximize : bool
        Direction of the metric.
    threshold : float in (0, 1)
        Stop when P(better) is below it.
    t0, min_points : int
        Algorithm 1's settings (leading observations skipped; fewest usable points).
    min_std : float
        Floor on both predictive stds.
    stop_on_fallback : bool
        Also compare when a prediction is the predictor's flagged fallback (last observed value).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    n = min(len(beta), len(incumbent_beta))
    head = lambda v: None if v is None else list(v)[:n]
    mine, why = _predict(beta, accuracy, denominators, t0, min_points)
    theirs, why_inc = _predict(head(incumbent_beta), head(incumbent_accuracy), head(incumbent_denominators), t0,
                               min_points)
    if mine is None or theirs is None:
        return Verdict(False, float("nan"), mine, theirs, why or f"incumbent: {why_inc}")
    fallback = [name for name, p in (("trial", mine), ("incumbent", theirs)) if p.method != "beta_extrapolation"]
    if fallback and not stop_on_fallback:
        return Verdict(False, float("nan"), mine, theirs, f"predictor fell back for the {' and '.join(fallback)}")
    sd, sd_inc = max(mine.std, min_std), max(theirs.std, min_std)
    prob = prob_beats(mine.accuracy, sd, theirs.accuracy, sd_inc, maximize=maximize)
    stop = prob < threshold
    reason = (f"predicted {mine.accuracy:.4f} ± {sd:.4f} vs incumbent {theirs.accuracy:.4f} ± {sd_inc:.4f} "
              f"(both from {n} observations): P(better) = {prob:.3g} {'<' if stop else '>='} {threshold}")
    return Verdict(bool(stop), prob, mine, theirs, reason)
