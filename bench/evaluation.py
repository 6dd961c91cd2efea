"""Ranking quality: how well predicted scores order candidates by their true final accuracy.

Every function takes

scores : array-like of shape (n_candidates,)
    Predicted quality, higher = better. ``NaN`` marks a failed candidate: it is
    ranked **last**, tied with every other ``NaN`` (internally NaN is replaced by
    ``-inf``). ``+inf`` / ``-inf`` are ordinary (extreme) values.
truth : array-like of shape (n_candidates,)
    True final accuracies (or any higher-is-better quantity). Must be finite.

and raises ``ValueError`` for fewer than 2 candidates, mismatched shapes or a
non-finite ``truth``.

Correlations (``spearman``, ``kendall``, ``weighted_tau``) are undefined when
either input is constant; they then return ``nan`` (without a warning).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

__all__ = ["kendall", "ranking_report", "spearman", "top1_regret", "topk_recall", "weighted_tau"]


def _check(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 1 or t.ndim != 1:
        raise ValueError(f"scores and truth must be 1-D; got shapes {s.shape} and {t.shape}.")
    if s.shape != t.shape:
        raise ValueError(f"scores and truth have mismatched lengths: {s.size} vs {t.size}.")
    if s.size < 2:
        raise ValueError(f"need at least 2 candidates to evaluate a ranking; got {s.size}.")
    if not np.all(np.isfinite(t)):
        raise ValueError("truth contains NaN or infinite values; true accuracies must be finite.")
    return np.where(np.isnan(s), -np.inf, s), t


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def _correlation(fn, s: np.ndarray, t: np.ndarray) -> float:
    if _constant(s) or _constant(t):
        return float("nan")
    # Pass ranks: all three statistics depend only on the order (with ties) of
    # each input, and ranks keep -inf (failed candidates) out of the arithmetic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(stats.rankdata(s), stats.rankdata(t)).statistic)


def spearman(scores, truth) -> float:
    """Spearman rank correlation, ``scipy.stats.spearmanr(scores, truth)`` (ties get average ranks).

    Returns
    -------
    float in [-1, 1], or nan if either input is constant.
    """
    s, t = _check(scores, truth)
    return _correlation(stats.spearmanr, s, t)


def kendall(scores, truth) -> float:
    """Kendall's tau-b, ``scipy.stats.kendalltau(scores, truth)`` (the default variant, tie-corrected).

    Returns
    -------
    float in [-1, 1], or nan if either input is constant.
    """
    s, t = _check(scores, truth)
    return _correlation(stats.kendalltau, s, t)


def weighted_tau(scores, truth) -> float:
    """Vigna's additive hyperbolic weighted tau, ``scipy.stats.weightedtau(scores, truth)``.

    With the defaults used here (``rank=True``, ``weigher=None``, ``additive=True``)
    SciPy computes the statistic twice and returns the **average**:

    1. elements ranked by decreasing lexicographic order of ``(scores, truth)``
       (largest score gets importance rank 0; ties in score broken by larger truth);
    2. elements ranked by decreasing lexicographic order of ``(truth, scores)``.

    In each, an exchange (discordant pair) between elements of importance ranks
    ``r`` and ``q`` (0-based) weighs ``1/(r+1) + 1/(q+1)``, so disagreements among
    the top candidates matter most. Because of the averaging the default is
    **symmetric**: swapping the arguments gives the same value, so "top" means the
    top of the predicted order *and* the top of the true order, half each. (For an
    asymmetric version weighted by the predicted order alone, SciPy needs
    ``rank=None``; we do not use it.) We pass ``(scores, truth)`` in that order.

    Returns
    -------
    float in [-1, 1], or nan if either input is constant.
    """
    s, t = _check(scores, truth)
    return _correlation(stats.weightedtau, s, t)


def _pessimistic_order(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; ties in score put the lower truth first (worst case)."""
    return np.lexsort((t, -s))


def top1_regret(scores, truth) -> float:
    """Accuracy lost by picking the top-scored candidate: ``max(truth) - truth[argmax(scores)]``.

    In the units of ``truth`` (e.g. 0.03 = 3 accuracy points if truth is in [0, 1]).
    If several candidates share the highest score, the **worst** of them (lowest
    truth) is taken as the pick: a tie is not given the benefit of the doubt. If all
    scores are NaN, every candidate is tied and the regret is ``max - min`` of truth.

    Returns
    -------
    float >= 0.
    """
    s, t = _check(scores, truth)
    picked = _pessimistic_order(s, t)[0]
    return float(t.max() - t[picked])


def topk_recall(scores, truth, k: int) -> float:
    """Fraction of the truly best ``k`` candidates found among the ``k`` top-scored ones.

    ``|P ∩ T| / k`` where

    - ``P`` = the ``k`` highest scores; ties at the cut are broken pessimistically
      (lower truth enters ``P`` first).
    - ``T`` = every candidate with truth ``>=`` the k-th largest truth (ties at the
      cut are all relevant, so picking either of two equally good candidates is
      not penalised).

    Parameters
    ----------
    k : int, 1 <= k <= n_candidates

    Returns
    -------
    float in [0, 1]; ``topk_recall(..., k=1)`` is 1 iff ``top1_regret`` is 0.
    """
    s, t = _check(scores, truth)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= s.size:
        raise ValueError(f"k must be an integer in [1, {s.size}]; got {k!r}.")
    picked = _pessimistic_order(s, t)[:k]
    cutoff = np.sort(t)[::-1][k - 1]
    return float(np.sum(t[picked] >= cutoff) / k)


def ranking_report(scores, truth, ks=(1, 3)) -> dict:
    """All ranking metrics in one dict.

    Parameters
    ----------
    scores, truth : array-like of shape (n_candidates,)
        See the module docstring.
    ks : iterable of int, default=(1, 3)
        Values of ``k`` for ``top{k}_recall``; a ``k`` larger than the number of
        candidates gives ``nan`` so that the keys do not depend on ``n``.

    Returns
    -------
    dict
        ``n_candidates`` (int), ``n_failed`` (int, NaN scores), ``spearman``,
        ``kendall``, ``weighted_tau``, ``top1_regret`` and ``top{k}_recall`` for each
        ``k`` (floats).
    """
    s, _ = _check(scores, truth)
    report = {
        "n_candidates": int(s.size),
        "n_failed": int(np.sum(np.isnan(np.asarray(scores, dtype=np.float64)))),
        "spearman": spearman(scores, truth),
        "kendall": kendall(scores, truth),
        "weighted_tau": weighted_tau(scores, truth),
        "top1_regret": top1_regret(scores, truth),
    }
    for k in ks:
        report[f"top{k}_recall"] = topk_recall(scores, truth, k) if k <= s.size else float("nan")
    return report
