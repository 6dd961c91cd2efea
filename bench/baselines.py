"""Cheap rankers that ncap is benchmarked against.

All scores follow one convention: **higher = better**, so they can be fed
directly to :mod:`bench.evaluation`.

- :func:`tse_ema` -- training speed estimation (Ru et al., NeurIPS 2021); lives in
  :mod:`ncap.capacitance.ranking_rules` (a rule `ncap rank` can rank by), re-exported here.
- :func:`learning_curve_extrapolation` -- fit ``a - b t^-c`` and extrapolate.
- :func:`successive_halving` -- spend an epoch budget by repeatedly halving the pool.
- :func:`static_prior` -- the candidate's source (e.g. ImageNet) accuracy.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from ncap.capacitance.ranking_rules import tse_ema  # one home: the ranking rules `ncap rank` uses

__all__ = [
    "CurvePrediction",
    "SuccessiveHalvingResult",
    "learning_curve_extrapolation",
    "static_prior",
    "successive_halving",
    "tse_ema",
]


# ----------------------------------------------------------------- learning curves


class CurvePrediction(NamedTuple):
    """Extrapolated accuracy; unpacks as ``(prediction, std)``.

    ``std`` is ``None`` when the curve could not be fitted and ``prediction`` is the
    last observed accuracy (see :attr:`fitted`). When fitted, ``std`` is the
    delta-method standard deviation of the prediction from the fit's parameter
    covariance; it is ``inf`` when that covariance is undetermined (e.g. exactly
    3 points for 3 parameters).
    """

    prediction: float
    std: float | None

    @property
    def fitted(self) -> bool:
        """True if the pow3 fit succeeded, False for the last-value fallback."""
        return self.std is not None


def _pow3(tau, a, b, c):
    return a - b * np.power(tau, -c)


def learning_curve_extrapolation(epochs, accuracies, horizon: float) -> CurvePrediction:
    """Predict the accuracy at ``horizon`` epochs from a partial learning curve.

    Fits the "pow3" curve ``acc(t) = a - b * (t / t0)^(-c)`` by least squares
    (``scipy.optimize.curve_fit``, trust-region reflective), where ``t0`` is the
    first observed epoch, so that ``a`` is the asymptote and ``b = a - acc(t0)``.
    Bounds: ``0 <= a <= 1``, ``-1 <= b <= 1``, ``1e-3 <= c <= 10``. The prediction
    is ``acc(horizon)`` clipped to [0, 1].

    Falls back to the last observed accuracy (``std=None``) when there are fewer
    than 3 distinct epochs or the fit fails / returns non-finite parameters.

    Parameters
    ----------
    epochs : array-like of shape (n,)
        Epochs at which accuracy was measured; > 0, any order, repeats allowed.
    accuracies : array-like of shape (n,)
        Accuracies as fractions in [0, 1] (not percent).
    horizon : float > 0
        Epoch to extrapolate to.

    Returns
    -------
    CurvePrediction
        ``(prediction, std)``; ``std is None`` flags the fallback.
    """
    t = np.asarray(epochs, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if t.ndim != 1 or y.ndim != 1 or t.shape != y.shape:
        raise ValueError(f"epochs and accuracies must be 1-D of equal length; got {t.shape} and {y.shape}.")
    if t.size == 0:
        raise ValueError("need at least one (epoch, accuracy) point.")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError("epochs and accuracies must be finite.")
    if np.any(t <= 0):
        raise ValueError("epochs must be > 0 (a power law is undefined at epoch 0).")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("accuracies must be fractions in [0, 1] (not percent).")
    if not (isinstance(horizon, numbers.Real) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a finite number > 0; got {horizon!r}.")

    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    last = float(y[-1])
    if np.unique(t).size < 3:
        return CurvePrediction(last, None)

    t0 = t[0]
    lower, upper = np.array([0.0, -1.0, 1e-3]), np.array([1.0, 1.0, 10.0])
    p0 = np.clip([y[-1], y[-1] - y[0], 0.5], lower + 1e-9, upper - 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(_pow3, t / t0, y, p0=p0, bounds=(lower, upper), maxfev=10000)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return CurvePrediction(last, None)
    if not np.all(np.isfinite(params)):
        return CurvePrediction(last, None)

    a, b, c = params
    tau = float(horizon) / t0
    prediction = float(np.clip(_pow3(tau, a, b, c), 0.0, 1.0))
    grad = np.array([1.0, -(tau**-c), b * tau**-c * np.log(tau)])
    if np.all(np.isfinite(cov)):
        std = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    else:
        std = float("inf")
    return CurvePrediction(prediction, std)


# -------------------------------------------------------------- successive halving


class SuccessiveHalvingResult(NamedTuple):
    """Outcome of :func:`successive_halving`.

    Attributes
    ----------
    ranking : list of int, length n
        Candidate indices, best first: later-eliminated candidates first, and
        within one round by decreasing last accuracy (the final survivor is first).
    scores : ndarray of shape (n,)
        ``n - position in ranking`` (higher = better), aligned with the input order.
    epochs_spent : ndarray of int, shape (n,)
        Epochs charged to each candidate (see ``resume``); sums to ``total_spent``.
    epochs_reached : ndarray of int, shape (n,)
        Largest ``epochs`` each candidate was evaluated at.
    last_accuracy : ndarray of shape (n,)
        Accuracy returned by the last evaluation of each candidate (NaN if it failed).
    total_spent : int
        Total epochs charged; always ``<= total_budget``.
    rounds : list of dict
        Per round: ``survivors`` (indices evaluated), ``epochs`` (cumulative epochs
        they were evaluated at) and ``spent`` (epochs charged in that round).
    """

    ranking: list
    scores: np.ndarray
    epochs_spent: np.ndarray
    epochs_reached: np.ndarray
    last_accuracy: np.ndarray
    total_spent: int
    rounds: list


def _halving_rounds(n: int, total_budget, eta) -> int:
    """Number of rounds ``R = ceil(log_eta n)`` for ``n`` candidates, after checking the arguments
    (see :func:`successive_halving`)."""
    if n == 0:
        raise ValueError("candidates is empty.")
    if isinstance(eta, bool) or not isinstance(eta, numbers.Integral) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2; got {eta!r}.")
    if isinstance(total_budget, bool) or not isinstance(total_budget, numbers.Integral):
        raise TypeError(f"total_budget must be an integer number of epochs; got {total_budget!r}.")
    n_rounds = 1
    while int(eta) ** n_rounds < n:  # without floating point
        n_rounds += 1
    if total_budget < n * n_rounds:
        raise ValueError(
            f"total_budget={total_budget} is too small for {n} candidates with eta={eta}: "
            f"need at least n * rounds = {n} * {n_rounds} = {n * n_rounds} epochs."
        )
    return n_rounds


def successive_halving(
    candidates: Sequence,
    evaluate: Callable[[object, int], float],
    total_budget: int,
    eta: int = 2,
    *,
    resume: bool = True,
) -> SuccessiveHalvingResult:
    """Rank candidates by successive halving under a total epoch budget.

    Fixed-budget successive halving (Karnin et al. 2013; Jamieson & Talwalkar 2016;
    the inner loop of Hyperband, Li et al. 2018). With ``n`` candidates there are
    ``R = max(1, ceil(log_eta(n)))`` rounds, each allotted ``floor(B / R)`` epochs
    split equally among its survivors ``S``; after each round the best
    ``ceil(|S| / eta)`` (by returned accuracy) survive, so one is left after round R.

    Budget accounting is exact:

    - ``resume=True`` (``evaluate`` continues training from where the candidate
      stopped): each survivor trains ``floor(B / (R |S|))`` *more* epochs, and is
      charged exactly those epochs.
    - ``resume=False`` (``evaluate`` retrains from scratch): each survivor is
      trained for ``floor(B / (R |S|))`` epochs *in total* and charged all of them.

    Either way a round costs at most ``B / R`` and the total at most ``B``.

    Parameters
    ----------
    candidates : sequence, length n >= 1
        Opaque objects passed back to ``evaluate``.
    evaluate : callable ``(candidate, epochs) -> accuracy``
        ``epochs`` is the cumulative number of epochs the candidate should have
        trained for when evaluated (strictly increasing across calls for a
        candidate). Returns a higher-is-better number; NaN (a failed run) is ranked
        below every number. Exceptions propagate.
    total_budget : int
        Total epochs ``B``; must be at least ``n * R`` so every round gets >= 1 epoch.
    eta : int >= 2, default=2
        Reduction factor.
    resume : bool, default=True
        See above.

    Returns
    -------
    SuccessiveHalvingResult

    Raises
    ------
    ValueError
        Empty ``candidates``, ``eta < 2`` or a budget below ``n * R``.
    TypeError
        ``evaluate`` not callable or ``total_budget`` not an integer.
    """
    items = list(candidates)
    n = len(items)
    if not callable(evaluate):
        raise TypeError("evaluate must be callable as evaluate(candidate, epochs) -> accuracy.")
    n_rounds = _halving_rounds(n, total_budget, eta)
    eta, total_budget = int(eta), int(total_budget)
    spent = np.zeros(n, dtype=np.int64)
    reached = np.zeros(n, dtype=np.int64)
    last_acc = np.full(n, np.nan)
    survivors = list(range(n))
    rounds = []
    eliminated: list[list[int]] = []  # per round, eliminated indices (best first)
    for _ in range(n_rounds):
        share = total_budget // (n_rounds * len(survivors))
        target = int(reached[survivors[0]]) + share if resume else share
        round_spent = 0
        for i in survivors:
            acc = float(evaluate(items[i], target))
            charge = target - int(reached[i]) if resume else target
            spent[i] += charge
            round_spent += charge
            reached[i] = target
            last_acc[i] = acc
        rounds.append({"survivors": list(survivors), "epochs": target, "spent": round_spent})
        key = np.where(np.isnan(last_acc), -np.inf, last_acc)
        ordered = sorted(survivors, key=lambda i: -key[i])  # stable: ties keep input order
        keep = -(-len(ordered) // eta)
        eliminated.append(ordered[keep:])
        survivors = ordered[:keep]

    ranking = list(survivors) + [i for group in reversed(eliminated) for i in group]
    scores = np.empty(n)
    scores[ranking] = n - np.arange(n, dtype=np.float64)
    return SuccessiveHalvingResult(
        ranking=ranking,
        scores=scores,
        epochs_spent=spent,
        epochs_reached=reached,
        last_accuracy=last_acc,
        total_spent=int(spent.sum()),
        rounds=rounds,
    )


# ------------------------------------------------------------------- static prior


def static_prior(source_accuracies) -> np.ndarray:
    """Rank candidates by their source-task accuracy (e.g. ImageNet top-1); higher = better.

    Parameters
    ----------
    source_accuracies : array-like of shape (n,)
        Finite numbers, one per candidate.

    Returns
    -------
    ndarray of shape (n,)
        A float64 copy of the input.
    """
    a = np.array(source_accuracies, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"source_accuracies must be a non-empty 1-D array; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError("source_accuracies contain NaN or infinite values.")
    return a
