"""The bounded power law ``p(x) = x^-alpha / Z(alpha, x_min, x_max)`` on ``x_min <= x <= x_max``, fitted by
maximum likelihood with ``x_min`` and ``x_max`` searched by KS distance.

``Z = sum_{k=x_min}^{x_max} k^-alpha`` (discrete) or the integral (continuous), from
``powerlaw_norm``. ``x_min`` and ``x_max`` are searched (KS) in the 30% windows of the
sparsified-network degree study (source 000 of ../shared/sources); the KS distances come from the same
vectorised machinery as ``fit_power_law`` (``powerlaw_ks``).

This is not ``powerlaw`` 2.0's ``truncated_power_law``, the exponential-cutoff law
``x^-alpha e^(-lambda x)``: the degree-distribution study needs the hard-bounded law, whose ``alpha`` may
be below 1 or negative. The result class ``TruncatedPowerLawFit`` lives in ``powerlaw``, next to
``PowerLawFit``.
"""
from __future__ import annotations

import math

import numpy as np

from ncap.network.powerlaw import TruncatedPowerLawFit, check_sample
from ncap.network.powerlaw_ks import ks_argmin, unique_counts
from ncap.network.powerlaw_norm import log_normaliser, solve_alpha

TPL_ALPHA_BOUNDS = (-50.0, 50.0)


def fit_truncated_power_law(
    data,
    search_fraction: float = 0.3,
    *,
    discrete: bool = True,
    alpha_bounds: tuple[float, float] = TPL_ALPHA_BOUNDS,
    min_distinct: int = 3,
    max_candidates: int | None = 64,
) -> TruncatedPowerLawFit:
    """Fit the bounded power law ``x^-alpha / Z(alpha, xmin, xmax)`` with KS-searched bounds.

    ``Z = sum_{x=xmin}^{xmax} x^-alpha`` (discrete; ``= zeta(alpha, xmin) - zeta(alpha, xmax+1)`` for
    ``alpha > 1``) or the integral (continuous). As in the sparsified-network degree study, with
    ``m = floor(n * search_fraction)``: ``xmin`` is searched among the distinct values of the ``m``
    smallest observations and ``xmax`` among those of the ``m`` largest; for every pair ``xmin < xmax``
    alpha is the MLE (any real value within ``alpha_bounds``), and the pair with the smallest KS
    distance over ``[xmin, xmax]`` wins (ties: first in (xmin, xmax) order). The KS distance is the
    exact supremum, which for discrete data is the study's maximum over all integers in the support.

    Parameters
    ----------
    data : array_like, shape (n,)
        Positive observations (integers if ``discrete``).
    search_fraction : float in (0, 1]
        Fraction ``k`` of the sample defining the two search windows (0.3 in the study).
    discrete : bool
    alpha_bounds : (float, float)
        Alpha search bracket; an optimum on it sets ``at_bound``.
    min_distinct : int
        Pairs whose support holds fewer distinct observed values are skipped. With two values the
        one-parameter law reproduces both frequencies exactly (KS = 0), so without this guard a sample
        with most mass on two values (e.g. the terrorism data) would always "fit" on ``[1, 2]``.

    Returns
    -------
    TruncatedPowerLawFit
    """
    if not 0 < search_fraction <= 1:
        raise ValueError(f"search_fraction must be in (0, 1], got {search_fraction}")
    x = check_sample(data, discrete=discrete)
    n = x.size
    m = math.floor(n * search_fraction)
    if m < 1:
        raise ValueError(f"search_fraction={search_fraction} leaves no value to search among n={n}")
    xs = np.sort(x)
    lo_c = _spread(np.unique(xs[:m]), max_candidates)
    hi_c = _spread(np.unique(xs[n - m:]), max_candidates)
    u, c = unique_counts(x, discrete)
    c_cum = np.cumsum(c)
    c_below = c_cum - c
    slog_cum = np.concatenate([[0.0], np.cumsum(c * np.log(u))])
    li, hj = np.meshgrid(np.arange(lo_c.size), np.arange(hi_c.size), indexing="ij")
    li, hj = li.ravel(), hj.ravel()
    start = np.searchsorted(u, lo_c[li], side="left")
    stop = np.searchsorted(u, hi_c[hj], side="right")
    pair = stop - start >= max(int(min_distinct), 2)
    if not pair.any():
        raise ValueError(
            f"no (xmin, xmax) pair in the search windows spans {max(int(min_distinct), 2)} distinct values "
            "(data too concentrated)"
        )
    li, hj, start, stop = li[pair], hj[pair], start[pair], stop[pair]
    v_lo, v_hi = lo_c[li], hi_c[hj]
    n_t = (c_cum[stop - 1] - c_below[start]).astype(np.float64)
    mean_log = (slog_cum[stop] - slog_cum[start]) / n_t
    a_lo, a_hi = (float(b) for b in alpha_bounds)
    a0 = np.where(mean_log > np.log(v_lo) + 1e-12, 1.0 + 1.0 / (mean_log - np.log(v_lo)), 1.0)
    alpha, d2, at_bound = solve_alpha(mean_log, v_lo, v_hi, discrete=discrete, a_lo=a_lo, a_hi=a_hi, a0=a0)
    log_z = log_normaliser(alpha, v_lo, v_hi, discrete=discrete)
    valid = ~at_bound
    ks, _ = ks_argmin(
        u, c, c_below, a=alpha, v=v_lo, hi=v_hi, log_z=log_z, n_fit=n_t, start=start, stop=stop,
        discrete=discrete, variant="sup", valid=valid if valid.any() else np.ones_like(valid),
    )
    best = int(np.argmin(np.where(valid, ks, np.inf))) if valid.any() else int(np.argmin(ks))
    return TruncatedPowerLawFit(
        alpha=float(alpha[best]),
        xmin=float(v_lo[best]),
        xmax=float(v_hi[best]),
        ks=float(ks[best]),
        n_tail=int(n_t[best]),
        n=int(n),
        alpha_se=float(1.0 / np.sqrt(n_t[best] * d2[best])),
        discrete=bool(discrete),
        at_bound=bool(at_bound[best]),
    )


def _spread(values: np.ndarray, k: int | None) -> np.ndarray:
    """At most ``k`` of the sorted ``values``, evenly spaced by rank, first and last included."""
    if k is None or values.size <= k:
        return values
    if k < 2:
        raise ValueError(f"max_candidates must be >= 2 or None, got {k}")
    return values[np.unique(np.round(np.linspace(0, values.size - 1, k)).astype(np.int64))]


__all__ = ["TPL_ALPHA_BOUNDS", "fit_truncated_power_law"]
