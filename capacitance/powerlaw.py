"""Fitting heavy-tailed distributions: power law (Clauset, Shalizi & Newman 2009) and bounded power law.

What is here
------------
* ``fit_power_law``: maximum-likelihood power law ``p(x) ∝ x^-alpha`` for ``x >= x_min``, with ``x_min``
  chosen by minimising the Kolmogorov-Smirnov (KS) distance over candidate values (Clauset 2009, §3.3).
  Discrete data (degrees) use the exact discrete likelihood ``p(x) = x^-alpha / zeta(alpha, x_min)``
  (Hurwitz zeta), maximised numerically; continuous data (ESD eigenvalues) the closed form
  ``alpha = 1 + n / sum(log(x / x_min))``.
* ``power_law_gof``: the semi-parametric bootstrap p-value of Clauset 2009 §4.1.
* ``fit_truncated_power_law``: the discrete power law with hard bounds,
  ``p(x) = x^-alpha / sum_{k=x_min}^{x_max} k^-alpha``, with ``x_min`` and ``x_max`` searched (KS) in the
  30% windows of the sparsified-network degree study (source 000 of ../shared/sources).
* ``fit_report`` / ``plot_ccdf``: a JSON-ready summary (fits, likelihood-ratio comparisons from
  ``capacitance.powerlaw_compare``) and the log-log CCDF figure.

Why not simply wrap the ``powerlaw`` package (v2.0)
---------------------------------------------------
* Speed. ``powerlaw.Fit`` refits every candidate ``x_min`` from the raw array (trimming, integer checks,
  a Nelder-Mead fit per candidate). Here the search runs on the unique values with cumulative counts:
  the tail size and ``sum(log x)`` of every candidate are suffix sums, all candidates' ``alpha`` are solved
  together by a vectorised safeguarded Newton iteration, and the KS distances are evaluated for all
  (candidate, point) pairs in flat numpy arrays. ``bench/powerlaw_speed.py`` measures the difference.
* The alpha cap. ``powerlaw``'s default parameter range for the power law is ``alpha in (0, 3)``; a
  candidate whose fit lands outside it is discarded, so a true ``alpha > 3`` cannot be found unless the
  caller widens ``parameter_ranges``. For ``x_min >= 10`` it also replaces the discrete MLE by the
  approximation ``1 + n / sum(log(x / (x_min - 1/2)))`` unless ``estimate_discrete=False``. Here the search
  bracket is ``(1, alpha_max]`` (default 50) and an optimum on the bound is flagged (``at_bound``), never
  silently kept as an answer.
* The bounded TPL form. ``powerlaw``'s ``truncated_power_law`` is the exponential-cutoff law
  ``x^-alpha e^(-lambda x)``; the degree-distribution study needs the hard-bounded law above, whose
  ``alpha`` may be below 1 or negative.

Numerics
--------
Sums ``Z(alpha, lo, hi) = sum_{x=lo}^{hi} x^-alpha`` (``hi`` finite or infinite; for ``hi = inf`` this is
``scipy.special.zeta(alpha, lo)``) are computed by ``_power_sum``: direct summation of the first terms,
then Euler-Maclaurin with five Bernoulli corrections from ``x >= 2|alpha| + 12`` on, everything scaled by
``lo^alpha`` (or ``hi^alpha`` for ``alpha < 0``) so that nothing underflows, and valid for any real
``alpha`` (needed by the bounded law). Derivatives in ``alpha`` are analytic for the direct terms and
central differences for the smooth Euler-Maclaurin part.

The KS distance. ``ks_variant="sup"`` (default) is the exact supremum of |empirical CDF - model CDF|:
for discrete data it equals the maximum over all integers ``x_min <= x <= max(x)`` used by Clauset's
reference code ``plfit`` and by the degree study, and for continuous data the usual two-sided KS
statistic. ``ks_variant="left"`` is ``powerlaw`` 2.0's convention (both CDFs taken as ``P(X < x)`` and
compared only at the observed values); it can only be smaller, and it is what to use to reproduce
``powerlaw``'s ``x_min``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

MIN_SAMPLES = 10
ALPHA_MAX = 50.0
TPL_ALPHA_BOUNDS = (-50.0, 50.0)
KS_VARIANTS = ("sup", "left")

# B_{2j} / (2j)!, j = 1..5 (Euler-Maclaurin corrections)
_BERNOULLI = (1.0 / 12, -1.0 / 720, 1.0 / 30240, -1.0 / 1209600, 1.0 / 47900160)
_CHUNK = 1 << 20  # elements per flat KS block


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted power law ``p(x) ∝ x^-alpha`` on ``x >= xmin``.

    Attributes
    ----------
    alpha : float
        Maximum-likelihood exponent.
    alpha_se : float
        Standard error of ``alpha``. Discrete: ``1 / sqrt(I)`` with ``I`` the observed Fisher information of
        the zeta likelihood, ``I = n_tail * d^2/dalpha^2 log zeta(alpha, xmin)`` (Clauset 2009 eq. 3.6).
        Continuous: ``(alpha - 1) / sqrt(n_tail)`` (eq. 3.2).
    xmin : float
        Lower bound of the power-law tail (same unit as the data).
    n_tail : int
        Number of observations ``>= xmin``.
    ks : float
        KS distance between the tail data and the fit (variant ``ks_variant``).
    p_value : float or None
        Bootstrap goodness-of-fit p-value (``power_law_gof``); None until computed.
    n : int
        Total sample size.
    discrete : bool
        Whether the discrete (zeta) or continuous likelihood was used.
    at_bound : bool
        True if the likelihood maximum sat on the search bound ``alpha_max`` (alpha is then a lower bound
        of the true optimum, not an estimate), or no candidate ``xmin`` gave an interior optimum.
    ks_variant : str
        ``"sup"`` or ``"left"`` (see the module docstring).
    xmin_fixed : bool
        True if ``xmin`` was given by the caller rather than searched.
    """

    alpha: float
    alpha_se: float
    xmin: float
    n_tail: int
    ks: float
    p_value: float | None
    n: int
    discrete: bool
    at_bound: bool = False
    ks_variant: str = "sup"
    xmin_fixed: bool = False

    def to_dict(self) -> dict:
        """The report fields (``alpha, alpha_se, xmin, n_tail, ks, p_value``) as JSON-ready Python types."""
        return {
            "alpha": float(self.alpha),
            "alpha_se": float(self.alpha_se),
            "xmin": _num(self.xmin),
            "n_tail": int(self.n_tail),
            "ks": float(self.ks),
            "p_value": None if self.p_value is None else float(self.p_value),
        }


@dataclass(frozen=True)
class TruncatedPowerLawFit:
    """A fitted bounded power law ``p(x) = x^-alpha / Z(alpha, xmin, xmax)`` on ``xmin <= x <= xmax``.

    Attributes
    ----------
    alpha : float
        Maximum-likelihood exponent; any real value (bounded support keeps the law normalisable).
    xmin, xmax : float
        Support bounds chosen by KS minimisation.
    ks : float
        KS distance over the support.
    n_tail : int
        Number of observations in ``[xmin, xmax]``.
    n : int
        Total sample size.
    alpha_se : float
        ``1 / sqrt(n_tail * d^2/dalpha^2 log Z)``, the observed-information standard error.
    discrete : bool
        Discrete (sum) or continuous (integral) normalisation.
    at_bound : bool
        True if the chosen pair's likelihood maximum sat on the alpha search bounds.
    """

    alpha: float
    xmin: float
    xmax: float
    ks: float
    n_tail: int
    n: int
    alpha_se: float = float("nan")
    discrete: bool = True
    at_bound: bool = False

    def to_dict(self) -> dict:
        """``alpha, xmin, xmax, ks, n_tail`` as JSON-ready Python types."""
        return {
            "alpha": float(self.alpha),
            "xmin": _num(self.xmin),
            "xmax": _num(self.xmax),
            "ks": float(self.ks),
            "n_tail": int(self.n_tail),
        }


def _num(x: float) -> int | float:
    """Integral floats as int (degrees read better as 7 than 7.0), others as float."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


# --------------------------------------------------------------------------- validation


def check_sample(data, *, discrete: bool, min_size: int = MIN_SAMPLES) -> np.ndarray:
    """Validate a sample for power-law fitting; return it as a float64 array of shape (n,).

    Raises ``ValueError`` naming the problem: not 1-D, fewer than ``min_size`` values, NaN/inf,
    values ``<= 0``, or (``discrete=True``) non-integers.
    """
    try:
        x = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data must be numeric: {exc}") from None
    if x.ndim == 2 and 1 in x.shape:
        x = x.ravel()
    if x.ndim != 1:
        raise ValueError(f"data must be 1-D, got an array of shape {x.shape}")
    if x.size < min_size:
        raise ValueError(f"need at least {min_size} values to fit a power law, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"data contains {int(np.sum(~np.isfinite(x)))} NaN or infinite values")
    if np.any(x <= 0):
        bad = x[x <= 0]
        raise ValueError(
            f"power-law fits need positive values; got {bad.size} value(s) <= 0 (e.g. {_num(bad[0])})"
        )
    if discrete:
        frac = x != np.round(x)
        if np.any(frac):
            raise ValueError(
                f"discrete fit needs integer values; got {int(frac.sum())} non-integer(s) "
                f"(e.g. {x[frac][0]!r}); use discrete=False for continuous data"
            )
    return x


def _check_variant(ks_variant: str) -> None:
    if ks_variant not in KS_VARIANTS:
        raise ValueError(f"ks_variant must be one of {KS_VARIANTS}, got {ks_variant!r}")


def _unique_counts(x: np.ndarray, discrete: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values (float64) and their counts (int64); bincount for compact integer data."""
    if discrete:
        top = x.max()
        if top <= 4 * x.size + 1_000_000:
            cnt = np.bincount(x.astype(np.int64))
            u = np.flatnonzero(cnt)
            return u.astype(np.float64), cnt[u].astype(np.int64)
    u, c = np.unique(x, return_counts=True)
    return u, c.astype(np.int64)


# --------------------------------------------------------------------------- normalising sums


def _bernoulli_series(a, inv):
    """``sum_j B_2j/(2j)! (a)_(2j-1) inv^(2j-1)`` (rising factorials), the Euler-Maclaurin corrections."""
    inv2 = inv * inv
    term = a * inv
    total = _BERNOULLI[0] * term
    for j, c in enumerate(_BERNOULLI[1:], 1):
        term = term * (a + 2 * j - 1) * (a + 2 * j) * inv2
        total = total + c * term
    return total


def _integral_scaled(a, A, B, log_s):
    """``integral_A^B (x/s)^-a dx`` with finite ``B``, any real ``a``; also returns ``(A/s)^-a, (B/s)^-a``.

    Written as ``P * L * (1 - e^-tau) / tau`` with ``L = log(B/A)``, ``tau = |a-1| L`` and ``P`` the value
    of ``x (x/s)^-a`` at the larger end, which is smooth through ``a = 1`` and cannot overflow.
    """
    logA, logB = np.log(A), np.log(B)
    fA = np.exp(-a * (logA - log_s))
    fB = np.exp(-a * (logB - log_s))
    L = logB - logA
    tau = np.abs(a - 1.0) * L
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(tau > 1e-10, -np.expm1(-tau) / tau, 1.0 - 0.5 * tau)
    return np.where(a >= 1.0, A * fA, B * fB) * L * h, fA, fB


def _em_part(a, A, B, log_s):
    """Euler-Maclaurin value of ``sum_{x=A}^{B} (x/s)^-a`` (``A`` large enough, ``B`` may be inf)."""
    fin = np.isfinite(B)
    out = np.empty_like(a)
    i = np.flatnonzero(~fin)  # zeta tail: integral A/(a-1), half term, corrections
    if i.size:
        ai, Ai = a[i], A[i]
        fA = np.exp(-ai * (np.log(Ai) - log_s[i]))
        out[i] = fA * (Ai / (ai - 1.0) + 0.5 + _bernoulli_series(ai, 1.0 / Ai))
    f = np.flatnonzero(fin)
    if f.size:
        af, Af, Bf = a[f], A[f], B[f]
        integral, fA, fB = _integral_scaled(af, Af, Bf, log_s[f])
        out[f] = (integral + 0.5 * (fA + fB) + fA * _bernoulli_series(af, 1.0 / Af)
                  - fB * _bernoulli_series(af, 1.0 / Bf))
    return out


def _integral_part(a, A, B, log_s):
    """``integral_A^B (x/s)^-a dx`` (``B`` may be inf for ``a > 1``)."""
    fin = np.isfinite(B)
    out = np.empty_like(a)
    i = np.flatnonzero(~fin)
    if i.size:
        out[i] = A[i] * np.exp(-a[i] * (np.log(A[i]) - log_s[i])) / (a[i] - 1.0)
    f = np.flatnonzero(fin)
    if f.size:
        out[f] = _integral_scaled(a[f], A[f], B[f], log_s[f])[0]
    return out


def _smooth_with_derivs(fun, a, h, *args):
    f0 = fun(a, *args)
    fp = fun(a + h, *args)
    fm = fun(a - h, *args)
    return f0, (fp - fm) / (2 * h), (fp - 2 * f0 + fm) / (h * h)


def _power_sum(a, lo, hi, *, discrete: bool = True, derivs: bool = False):
    """Scaled normaliser of ``x^-a`` on ``[lo, hi]`` and its alpha-derivatives.

    Discrete: ``T = sum_{x=lo}^{hi} (x/s)^-a`` over integers; continuous: ``T = integral_lo^hi (x/s)^-a dx``.
    ``s = lo`` for ``a >= 0`` and ``s = hi`` for ``a < 0``; ``hi = inf`` needs ``a > 1`` (else T = inf).

    Parameters
    ----------
    a, lo, hi : array_like, broadcastable
        Exponent, lower and upper bound (integers if discrete; ``1 <= lo <= hi``).

    Returns
    -------
    log_s, T, T1, T2 : ndarray, shape = broadcast shape (flattened)
        ``log s``, ``T`` and its first two derivatives in ``a`` at fixed ``s`` (None unless ``derivs``).
        Then ``log Z = log T - a log s``.
    """
    a, lo, hi = (np.ravel(v).astype(np.float64, copy=False) for v in np.broadcast_arrays(a, lo, hi))
    inf_hi = np.isinf(hi)
    bad = inf_hi & (a <= 1.0)
    log_s = np.log(lo)
    neg = np.flatnonzero(a < 0)
    if neg.size:
        log_s[neg] = np.log(np.where(inf_hi[neg], 1.0, hi[neg]))
    T = np.zeros_like(a)
    T1 = np.zeros_like(a) if derivs else None
    T2 = np.zeros_like(a) if derivs else None
    if discrete:
        split = np.ceil(2.0 * np.abs(a) + 14.0)  # Euler-Maclaurin from x >= 2|a| + 14 on
        idx = np.flatnonzero((lo < split) & ~bad)
        if idx.size:
            a_i, lo_i, ls_i = a[idx], lo[idx], log_s[idx]
            nd_i = (np.minimum(hi[idx], split[idx] - 1.0) - lo_i + 1.0).astype(np.int64)
            t0, t1, t2 = np.zeros(idx.size), np.zeros(idx.size), np.zeros(idx.size)
            for k in range(int(nd_i.max())):
                m = nd_i > k
                ell = np.log(lo_i[m] + k) - ls_i[m]
                term = np.exp(-a_i[m] * ell)
                t0[m] += term
                if derivs:
                    t1[m] -= ell * term
                    t2[m] += ell * ell * term
            T[idx] += t0
            if derivs:
                T1[idx] += t1
                T2[idx] += t2
        em = np.flatnonzero((hi >= split) & ~bad)
        fun, A = _em_part, np.maximum(lo, split)
    else:
        em = np.flatnonzero(~bad)
        fun, A = _integral_part, lo
    if derivs:
        h = 1e-4 * np.where(inf_hi, np.minimum(1.0, np.maximum(a - 1.0, 1e-12)), 1.0)
    if em.size:
        args = (A[em], hi[em], log_s[em])
        if derivs:
            e0, e1, e2 = _smooth_with_derivs(fun, a[em], h[em], *args)
            T[em] += e0
            T1[em] += e1
            T2[em] += e2
        else:
            T[em] += fun(a[em], *args)
    T[bad] = np.inf
    return log_s, T, T1, T2


def log_normaliser(a, lo, hi, *, discrete: bool = True) -> np.ndarray:
    """``log Z``: ``log sum_{x=lo}^{hi} x^-a`` (discrete) or ``log integral_lo^hi x^-a dx`` (continuous).

    ``hi = inf`` gives ``log zeta(a, lo)`` (discrete) or ``log(lo^(1-a) / (a-1))``. Shape: broadcast, flat.
    """
    a_b = np.broadcast_arrays(a, lo, hi)[0].astype(np.float64).ravel()
    log_s, T, _, _ = _power_sum(a_b, lo, hi, discrete=discrete)
    with np.errstate(divide="ignore"):
        return np.log(T) - a_b * log_s


def _log_norm_derivs(a, lo, hi, discrete):
    log_s, T, T1, T2 = _power_sum(a, lo, hi, discrete=discrete, derivs=True)
    r1 = T1 / T
    return np.log(T) - a * log_s, r1 - log_s, T2 / T - r1 * r1


# --------------------------------------------------------------------------- vectorised MLE


def _solve_alpha(mean_log, lo, hi, *, discrete, a_lo, a_hi, a0):
    """Solve the likelihood equation ``d/da log Z(a; lo, hi) + mean_log = 0`` for many fits at once.

    The score is increasing in ``a`` (``log Z`` is convex), so a bracketed Newton iteration with bisection
    fallback converges for every element. ``a_lo`` may be the singular point 1 of the infinite-support
    law (never evaluated). Returns ``(alpha, d2logZ at alpha, at_bound)``.
    """
    k = mean_log.size
    lo_b = np.full(k, a_lo, dtype=np.float64)
    hi_b = np.full(k, a_hi, dtype=np.float64)
    at_bound = np.zeros(k, dtype=bool)
    # ends of the bracket: an optimum beyond them is reported on the bound
    _, d1_hi, _ = _log_norm_derivs(hi_b, lo, hi, discrete)
    above = d1_hi + mean_log < 0
    at_bound |= above
    if np.isfinite(hi).all():
        _, d1_lo, _ = _log_norm_derivs(lo_b, lo, hi, discrete)
        below = d1_lo + mean_log > 0
        at_bound |= below
    else:
        below = np.zeros(k, dtype=bool)
    a = np.clip(np.where(np.isfinite(a0), a0, 0.5 * (lo_b + hi_b)), lo_b + 1e-6, hi_b - 1e-6)
    a[above], a[below] = hi_b[above], lo_b[below]
    d2 = np.full(k, np.nan)
    active = np.flatnonzero(~at_bound)
    for _ in range(200):
        if not active.size:
            break
        _, d1, dd = _log_norm_derivs(a[active], lo[active], hi[active], discrete)
        g = d1 + mean_log[active]
        d2[active] = dd
        lo_b[active] = np.where(g < 0, a[active], lo_b[active])
        hi_b[active] = np.where(g > 0, a[active], hi_b[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            new = a[active] - g / dd
        out = ~((new > lo_b[active]) & (new < hi_b[active]))
        new = np.where(out, 0.5 * (lo_b[active] + hi_b[active]), new)
        step = np.abs(new - a[active])
        a[active] = new
        done = (step <= 1e-11 * (1.0 + np.abs(new))) | (g == 0) | (hi_b[active] - lo_b[active] < 1e-13)
        active = active[~done]
    # curvature at the final alpha (also for bound solutions)
    _, _, d2 = _log_norm_derivs(a, lo, hi, discrete)
    return a, d2, at_bound


# --------------------------------------------------------------------------- KS distances


def _ks_points(u, c, c_below, fid, j, *, a, hi, log_z, n_fit, start, discrete, variant):
    """CDF values at the points ``u[j]`` of fits ``fid`` (flat arrays of equal length).

    Returns ``(diff, emp_lt, mod_lt)``: the KS contribution ``|F_n - F|`` of each point (both one-sided
    limits for ``variant="sup"``) and the empirical / model ``P(X < u_j)``.
    """
    af, nf, lz = a[fid], n_fit[fid], log_z[fid]
    uj = u[j]
    emp_lt = (c_below[j] - c_below[start[fid]]) / nf
    log_sf = log_normaliser(af, uj, hi[fid], discrete=discrete) - lz  # log P(X >= u_j)
    mod_lt = -np.expm1(log_sf)
    diff = np.abs(emp_lt - mod_lt)
    if variant == "sup":
        emp_le = emp_lt + c[j] / nf
        mod_le = mod_lt + (np.exp(-af * np.log(uj) - lz) if discrete else 0.0)
        diff = np.maximum(diff, np.abs(emp_le - mod_le))
    return diff, emp_lt, mod_lt


def _segments(lens, first_index):
    """Flat (segment id, running index) arrays for segments of lengths ``lens`` starting at ``first_index``."""
    fid = np.repeat(np.arange(lens.size), lens)
    seg0 = np.cumsum(lens) - lens
    j = np.arange(int(lens.sum())) - np.repeat(seg0, lens) + np.repeat(first_index, lens)
    return fid, j, seg0


def _ks_distances(u, c, c_below, *, a, v, hi, log_z, n_fit, start, stop, discrete, variant):
    """Exact KS distance of many fits at once, each against the unique values ``u[start:stop]``.

    Fit ``i`` has exponent ``a[i]``, support ``[v[i], hi[i]]``, ``log Z = log_z[i]`` and ``n_fit[i]`` points;
    ``c_below[j]`` is the number of observations ``< u[j]``. Evaluated on a flat array of all
    (fit, point) pairs, about ``_CHUNK`` pairs at a time.
    """
    lens = (stop - start).astype(np.int64)
    out = np.zeros(a.size)
    ends = np.cumsum(lens)
    first = 0
    kw = {"a": a, "hi": hi, "log_z": log_z, "n_fit": n_fit, "start": start, "discrete": discrete, "variant": variant}
    while first < a.size:
        base = ends[first - 1] if first else 0
        last = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), first + 1)
        fid, j, seg0 = _segments(lens[first:last], start[first:last])
        diff, _, _ = _ks_points(u, c, c_below, fid + first, j, **kw)
        out[first:last] = np.maximum.reduceat(diff, seg0)
        first = last
    return out


def _ks_screen(u, c, c_below, cum_ck, *, k_per_fit, start, stop, **pk):
    """KS contributions of each fit on a subset of its points, with bounds for the points in between.

    The subset: ``k_per_fit`` points evenly spaced by rank in ``[start, stop)`` (both ends included) and
    the global cumulative-count checkpoints ``cum_ck`` inside it (they split heavy atoms). Both CDFs are
    non-decreasing, so between consecutive subset points ``j1 < j2`` every one-sided CDF value lies in
    ``[F(u_j1), F(u_j2))`` and no point strictly inside can contribute more than
    ``max(E_j2 - M_j1, M_j2 - E_j1)``.

    Returns
    -------
    fid, j, diff, e_lt, m_lt : ndarray, shape (m,)
        Fit id (sorted), point index, KS contribution, empirical and model ``P(X < u_j)``.
    """
    lens = (stop - start).astype(np.int64)
    k = np.minimum(lens, k_per_fit)
    fid_a, pos, _ = _segments(k, np.zeros(lens.size, dtype=np.int64))
    j_a = start[fid_a] + np.round(pos * (lens[fid_a] - 1) / np.maximum(k[fid_a] - 1, 1)).astype(np.int64)
    i0 = np.searchsorted(cum_ck, start, side="left")
    i1 = np.searchsorted(cum_ck, stop, side="left")
    fid_b, pos_b, _ = _segments(i1 - i0, i0)
    j_b = cum_ck[pos_b] if pos_b.size else pos_b
    key = np.sort(np.concatenate([fid_a, fid_b]) * (u.size + 1) + np.concatenate([j_a, j_b]))
    key = key[np.r_[True, key[1:] != key[:-1]]]
    fid, j = key // (u.size + 1), key % (u.size + 1)
    diff, e_lt, m_lt = _ks_points(u, c, c_below, fid, j, start=start, **pk)
    return fid, j, diff, e_lt, m_lt


def _ks_argmin(u, c, c_below, *, a, v, hi, log_z, n_fit, start, stop, discrete, variant, valid):
    """KS distances, exact at least for every fit that can have the smallest one among ``valid``.

    Large problems are screened first (``_ks_screen``, 128 points per fit): the screened maximum is a
    lower bound ``lb`` of a fit's KS, and ``lb`` raised by the interval bounds an upper bound ``ub``. A
    fit with ``lb`` above the smallest ``ub`` of a valid fit cannot win and keeps ``lb``. For the others
    only intervals whose bound exceeds the fit's current maximum can change it; they are split at 16
    interior points, bounded again, and so on until none is left (branch and bound; each round is
    one vectorised evaluation). Returns ``(ks, exact)``.
    """
    arrays = {"a": a, "hi": hi, "log_z": log_z, "n_fit": n_fit, "start": start}
    pk = dict(discrete=discrete, variant=variant, **arrays)
    lens = (stop - start).astype(np.int64)
    if lens.sum() <= _CHUNK or not valid.any():
        return (_ks_distances(u, c, c_below, v=v, stop=stop, **pk), np.ones(a.size, dtype=bool))
    cum_le = c_below + c
    cum_ck = np.unique(np.searchsorted(cum_le, np.linspace(0, cum_le[-1], 129)[1:], side="left"))
    fid, j, diff, e, m = _ks_screen(u, c, c_below, cum_ck, k_per_fit=128, stop=stop, **pk)
    seg0 = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    ks = np.maximum.reduceat(diff, seg0)
    same = np.flatnonzero(fid[1:] == fid[:-1])
    iv = (fid[same], j[same], j[same + 1], e[same], m[same], e[same + 1], m[same + 1])
    ub = ks.copy()
    np.maximum.at(ub, iv[0], np.maximum(iv[5] - iv[4], iv[6] - iv[3]))
    alive = ks <= ub[valid].min()
    # refine the intervals that may still hold a fit's maximum, 16 interior points at a time
    while iv[0].size:
        f, jl, jr, el, ml, er, mr = iv
        keep = alive[f] & (jr - jl > 1) & (np.maximum(er - ml, mr - el) > ks[f])
        f, jl, jr, el, ml, er, mr = (x[keep] for x in iv)
        if not f.size:
            break
        inner = jr - jl - 1
        k = np.minimum(inner, 16)
        seg, pos, _ = _segments(k, np.ones(f.size, dtype=np.int64))
        jj = jl[seg] + np.where(inner[seg] <= 16, pos, np.round(pos * (jr[seg] - jl[seg]) / 17.0).astype(np.int64))
        ff = f[seg]
        d = np.empty(jj.size)
        ee = np.empty(jj.size)
        mm = np.empty(jj.size)
        for lo_ in range(0, jj.size, _CHUNK):
            sl = slice(lo_, lo_ + _CHUNK)
            d[sl], ee[sl], mm[sl] = _ks_points(u, c, c_below, ff[sl], jj[sl], **pk)
        np.maximum.at(ks, ff, d)
        # new intervals: (jl, p_1), (p_1, p_2), ..., (p_k, jr) of each refined interval
        first = np.r_[True, seg[1:] != seg[:-1]]
        last = np.r_[seg[1:] != seg[:-1], True]
        left_j = np.where(first, jl[seg], np.r_[0, jj[:-1]])
        left_e = np.where(first, el[seg], np.r_[0.0, ee[:-1]])
        left_m = np.where(first, ml[seg], np.r_[0.0, mm[:-1]])
        lj = np.flatnonzero(last)
        iv = tuple(np.concatenate(pair) for pair in (
            (ff, ff[lj]), (left_j, jj[lj]), (jj, jr[seg[lj]]), (left_e, ee[lj]), (left_m, mm[lj]),
            (ee, er[seg[lj]]), (mm, mr[seg[lj]]),
        ))
    return ks, alive


# --------------------------------------------------------------------------- power law


def _fit_candidates(u, c, c_below, n_suf, slog_suf, v, start, *, discrete, alpha_max, variant):
    """alpha, se, at_bound, KS for the candidate lower bounds ``v`` (tail starts at ``u[start]``).

    KS is exact for every candidate that can be the minimiser, a lower bound for the others.
    """
    n_t = n_suf[start].astype(np.float64)
    slog = slog_suf[start]
    inf = np.full(v.size, np.inf)
    if discrete:
        a0 = 1.0 + n_t / (slog - n_t * np.log(v - 0.5))
        alpha, d2, at_bound = _solve_alpha(
            slog / n_t, v, inf, discrete=True, a_lo=1.0, a_hi=alpha_max, a0=a0
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            se = 1.0 / np.sqrt(n_t * d2)
    else:
        with np.errstate(divide="ignore"):
            alpha = 1.0 + n_t / (slog - n_t * np.log(v))
        at_bound = ~np.isfinite(alpha)
        alpha = np.where(at_bound, np.inf, alpha)
        se = (alpha - 1.0) / np.sqrt(n_t)
    ks = np.full(v.size, np.inf)
    ok = np.flatnonzero(np.isfinite(alpha))
    if ok.size:
        log_z = log_normaliser(alpha[ok], v[ok], inf[ok], discrete=discrete)
        valid = ~at_bound[ok]
        ks[ok], _ = _ks_argmin(
            u, c, c_below, a=alpha[ok], v=v[ok], hi=inf[ok], log_z=log_z, n_fit=n_t[ok],
            start=start[ok], stop=np.full(ok.size, u.size), discrete=discrete, variant=variant,
            valid=valid if valid.any() else np.ones_like(valid),
        )
    return alpha, se, at_bound, ks, n_t


def fit_power_law(
    data,
    xmin: float | None = None,
    discrete: bool = True,
    xmin_candidates=None,
    *,
    ks_variant: str = "sup",
    alpha_max: float = ALPHA_MAX,
) -> PowerLawFit:
    """Fit a power law ``p(x) ∝ x^-alpha, x >= xmin`` by maximum likelihood (Clauset et al. 2009).

    Parameters
    ----------
    data : array_like, shape (n,)
        Positive observations (integers if ``discrete``), e.g. node degrees or ESD eigenvalues.
    xmin : float, optional
        Fix the lower bound instead of searching it.
    discrete : bool
        Exact discrete (Hurwitz-zeta) likelihood, else the continuous one.
    xmin_candidates : array_like, optional
        Values to search ``xmin`` over. Default: every distinct value except the two largest (as
        ``powerlaw`` 2.0 does; the tail keeps at least three distinct values).
    ks_variant : {"sup", "left"}
        KS definition (module docstring); ``"left"`` reproduces ``powerlaw`` 2.0.
    alpha_max : float
        Upper end of the discrete alpha search bracket ``(1, alpha_max]``.

    Returns
    -------
    PowerLawFit
        ``xmin`` minimises the KS distance among candidates whose likelihood optimum is interior
        (``at_bound`` is set, with a warning, if none is). ``p_value`` is None: see ``power_law_gof``.
    """
    _check_variant(ks_variant)
    x = check_sample(data, discrete=discrete)
    u, c = _unique_counts(x, discrete)
    n = x.size
    logu = np.log(u)
    n_suf = np.cumsum(c[::-1])[::-1]
    slog_suf = np.cumsum((c * logu)[::-1])[::-1]
    c_below = n - n_suf
    if xmin is not None:
        cand = np.array([float(xmin)])
        if not cand[0] > 0 or (discrete and not float(xmin).is_integer()):
            raise ValueError(f"xmin must be a positive{' integer' if discrete else ''}, got {xmin!r}")
    elif xmin_candidates is not None:
        cand = np.unique(np.asarray(xmin_candidates, dtype=np.float64).ravel())
        if discrete:
            cand = np.ceil(cand)
        cand = cand[(cand > 0) & (cand <= u[-1])]
        if not cand.size:
            raise ValueError("no usable xmin candidate (all <= 0 or above the largest value)")
    else:
        if u.size < 3:
            raise ValueError(f"need at least 3 distinct values to search xmin, got {u.size}")
        cand = u[:-2]
    start = np.searchsorted(u, cand, side="left")
    keep = start < u.size
    cand, start = cand[keep], start[keep]
    if not cand.size:
        raise ValueError(f"no data at or above xmin={xmin!r}")
    alpha, se, at_bound, ks, n_t = _fit_candidates(
        u, c, c_below, n_suf, slog_suf, cand, start, discrete=discrete, alpha_max=alpha_max, variant=ks_variant
    )
    valid = ~at_bound & np.isfinite(ks)
    if valid.any():
        best = int(np.argmin(np.where(valid, ks, np.inf)))
    else:
        best = int(np.argmin(np.where(np.isfinite(ks), ks, np.inf)))
        warnings.warn(
            f"power-law alpha sits on the search bound alpha_max={alpha_max} for every xmin candidate; "
            "the tail is too steep (or too concentrated on xmin) to estimate alpha",
            RuntimeWarning,
            stacklevel=2,
        )
    return PowerLawFit(
        alpha=float(alpha[best]),
        alpha_se=float(se[best]),
        xmin=float(cand[best]),
        n_tail=int(n_t[best]),
        ks=float(ks[best]),
        p_value=None,
        n=int(n),
        discrete=bool(discrete),
        at_bound=bool(at_bound[best]),
        ks_variant=ks_variant,
        xmin_fixed=xmin is not None,
    )


# --------------------------------------------------------------------------- sampling


def sample_power_law(size: int, alpha: float, xmin: float, *, discrete: bool = True, rng=None) -> np.ndarray:
    """Draw ``size`` values from the power law ``p(x) ∝ x^-alpha, x >= xmin`` (``alpha > 1``).

    Continuous: inverse CDF ``xmin (1-r)^(-1/(alpha-1))``. Discrete: exact inversion of the survival
    function ``S(x) = zeta(alpha, x) / zeta(alpha, xmin)`` (``X = max{x : S(x) >= r}``), vectorised: a
    lookup table for the first 4096 values, the continuous approximation (Clauset 2009 eq. D.6) corrected
    by an integer bisection for the rest. Draws beyond 1e15 (only for alpha very close to 1) are clipped.

    Returns
    -------
    ndarray, shape (size,), float64
    """
    if not alpha > 1:
        raise ValueError(f"the power law needs alpha > 1 to be normalisable, got {alpha}")
    rng = np.random.default_rng(rng)
    r = 1.0 - rng.random(size)  # (0, 1]
    if not discrete:
        return xmin * r ** (-1.0 / (alpha - 1.0))
    xmin = float(xmin)
    log_z0 = log_normaliser(alpha, xmin, np.inf)[0]
    table_x = xmin + np.arange(4096, dtype=np.float64)
    log_sf = log_normaliser(alpha, table_x, np.inf) - log_z0  # decreasing
    logr = np.log(r)
    # number of table entries with S(x) >= r, minus one -> index of the draw
    pos = np.searchsorted(-log_sf, -logr, side="right") - 1
    out = table_x[np.clip(pos, 0, None)]
    far = np.flatnonzero(pos >= table_x.size - 1)
    if far.size:
        lr = logr[far]
        guess = np.floor((xmin - 0.5) * np.exp(-lr / (alpha - 1.0)) + 0.5)
        lo = np.full(far.size, table_x[-1])
        hi = np.clip(guess, lo + 1, 1e15)

        def sf_ok(xv, lrv):  # S(x) >= r
            return log_normaliser(alpha, xv, np.inf) - log_z0 >= lrv

        # grow hi until S(hi) < r, then bisect on integers
        grow = sf_ok(hi, lr) & (hi < 1e15)
        while grow.any():
            hi[grow] = np.minimum(hi[grow] * 2, 1e15)
            grow[grow] = sf_ok(hi[grow], lr[grow]) & (hi[grow] < 1e15)
        active = np.flatnonzero(hi - lo > 1)
        while active.size:
            mid = np.floor(0.5 * (lo[active] + hi[active]))
            okm = sf_ok(mid, lr[active])
            lo[active] = np.where(okm, mid, lo[active])
            hi[active] = np.where(okm, hi[active], mid)
            active = active[hi[active] - lo[active] > 1]
        top = sf_ok(hi, lr)  # only when clipped at 1e15
        out[far] = np.where(top, hi, lo)
    return out


def sample_truncated_power_law(size: int, alpha: float, xmin: int, xmax: int, *, rng=None) -> np.ndarray:
    """Draw ``size`` integers from ``p(x) ∝ x^-alpha`` on ``xmin..xmax`` (any real alpha; range <= 1e7)."""
    if not (1 <= xmin <= xmax) or xmax - xmin > 10_000_000:
        raise ValueError(f"need 1 <= xmin <= xmax with xmax - xmin <= 1e7, got {xmin}, {xmax}")
    rng = np.random.default_rng(rng)
    x = np.arange(int(xmin), int(xmax) + 1, dtype=np.float64)
    logw = -alpha * np.log(x)
    cdf = np.cumsum(np.exp(logw - logw.max()))
    cdf /= cdf[-1]
    return x[np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), x.size - 1)]


# --------------------------------------------------------------------------- goodness of fit


def power_law_gof(
    data, fit: PowerLawFit, n_bootstrap: int = 1000, seed=None, *, xmin_candidates=None
) -> float:
    """Semi-parametric bootstrap p-value of a power-law fit (Clauset et al. 2009, §4.1).

    Each synthetic sample has the size of ``data``: with probability ``n_tail / n`` a point is drawn from
    the fitted power law above ``xmin``, otherwise resampled from the observed values below ``xmin``.
    Every synthetic sample is refitted the same way as ``fit`` (``xmin`` searched unless it was fixed,
    same discreteness and KS variant), and the p-value is the fraction of synthetic KS distances
    ``>=`` the observed one (as in Clauset's ``plpva``). About 2500 replicates give p to +-0.01.

    Parameters
    ----------
    data : array_like, shape (n,)
        The sample ``fit`` was computed on.
    fit : PowerLawFit
    n_bootstrap : int
        Number of synthetic samples (>= 1).
    seed : int or numpy Generator, optional

    Returns
    -------
    float in [0, 1]
    """
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    x = check_sample(data, discrete=fit.discrete)
    if x.size != fit.n:
        raise ValueError(f"data has {x.size} values but the fit was made on {fit.n}")
    rng = np.random.default_rng(seed)
    body = x[x < fit.xmin]
    n = x.size
    p_tail = fit.n_tail / n if body.size else 1.0
    exceed = 0
    for _ in range(int(n_bootstrap)):
        k = int(rng.binomial(n, p_tail))
        syn = np.concatenate([
            sample_power_law(k, fit.alpha, fit.xmin, discrete=fit.discrete, rng=rng),
            body[rng.integers(0, body.size, n - k)] if n - k else np.empty(0),
        ])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                ref = fit_power_law(
                    syn,
                    xmin=fit.xmin if fit.xmin_fixed else None,
                    discrete=fit.discrete,
                    xmin_candidates=xmin_candidates,
                    ks_variant=fit.ks_variant,
                )
            except ValueError:  # degenerate synthetic sample (e.g. < 3 distinct values): counts as extreme
                exceed += 1
                continue
        exceed += ref.ks >= fit.ks
    return exceed / int(n_bootstrap)


# --------------------------------------------------------------------------- bounded power law


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
    u, c = _unique_counts(x, discrete)
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
    alpha, d2, at_bound = _solve_alpha(mean_log, v_lo, v_hi, discrete=discrete, a_lo=a_lo, a_hi=a_hi, a0=a0)
    log_z = log_normaliser(alpha, v_lo, v_hi, discrete=discrete)
    valid = ~at_bound
    ks, _ = _ks_argmin(
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


# --------------------------------------------------------------------------- report & plot


def fit_report(data, n_bootstrap: int = 0, seed=None, *, discrete: bool = True) -> dict:
    """Power-law fit, bounded power law and likelihood-ratio comparisons as one JSON-ready dict.

    Returns
    -------
    dict
        ``{"power_law": {alpha, alpha_se, xmin, n_tail, ks, p_value},
        "truncated_power_law": {alpha, xmin, xmax, ks, n_tail},
        "comparisons": {name: {"R": normalised log-likelihood ratio, "p": p-value}}, "n": int}``.
        ``R > 0`` favours the power law. ``p_value`` is None when ``n_bootstrap == 0``.
    """
    from capacitance.powerlaw_compare import compare_distributions

    x = check_sample(data, discrete=discrete)
    fit = fit_power_law(x, discrete=discrete)
    if n_bootstrap:
        fit = replace(fit, p_value=power_law_gof(x, fit, n_bootstrap=n_bootstrap, seed=seed))
    tpl = fit_truncated_power_law(x, discrete=discrete)
    return report_dict(fit, tpl, compare_distributions(x, fit))


def report_dict(fit: PowerLawFit, tpl: TruncatedPowerLawFit, comparisons: dict) -> dict:
    """Assemble ``fit_report``'s JSON-ready dict from already computed fits and ``{name: (R, p)}``."""
    return {
        "power_law": fit.to_dict(),
        "truncated_power_law": tpl.to_dict(),
        "comparisons": {k: {"R": float(r), "p": float(p)} for k, (r, p) in comparisons.items()},
        "n": int(fit.n),
    }


def plot_ccdf(data, fit: PowerLawFit, tpl: TruncatedPowerLawFit | None = None, ax=None):
    """Log-log empirical CCDF ``P(X >= x)`` with the fitted power law (and bounded power law) overlaid.

    The fitted curves are scaled by the fraction of the sample they describe (the bounded law also
    raised by the fraction above its ``xmax``), so they sit on the data.
    Without ``ax`` a new ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) is created.

    Returns
    -------
    matplotlib.axes.Axes
    """
    x = check_sample(data, discrete=fit.discrete)
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.0, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    u, c = _unique_counts(x, fit.discrete)
    sf = (x.size - (np.cumsum(c) - c)) / x.size
    ax.loglog(u, sf, ".", ms=3, color="0.3", label="data")
    grid = np.unique(np.geomspace(fit.xmin, u[-1], 200))
    if fit.discrete:
        grid = np.unique(np.round(grid))
    if np.isfinite(fit.alpha):
        lz = log_normaliser(fit.alpha, fit.xmin, np.inf, discrete=fit.discrete)[0]
        model = np.exp(log_normaliser(fit.alpha, grid, np.inf, discrete=fit.discrete) - lz)
        ax.loglog(grid, model * fit.n_tail / x.size, "-", color="C3",
                  label=f"power law α={fit.alpha:.2f}, xmin={_num(fit.xmin)}")
    if tpl is not None:
        g = np.unique(np.geomspace(tpl.xmin, tpl.xmax, 200))
        if tpl.discrete:
            g = np.unique(np.round(g))
        lz = log_normaliser(tpl.alpha, tpl.xmin, tpl.xmax, discrete=tpl.discrete)[0]
        model = np.exp(log_normaliser(tpl.alpha, g, tpl.xmax, discrete=tpl.discrete) - lz)
        above = float(np.sum(x > tpl.xmax)) / x.size  # P(X >= x) = P(X > xmax) + (n_tail / n) S_tpl(x)
        ax.loglog(g, above + model * tpl.n_tail / x.size, "--", color="C0",
                  label=f"bounded PL α={tpl.alpha:.2f}, [{_num(tpl.xmin)}, {_num(tpl.xmax)}]")
    ax.set_xlabel("x")
    ax.set_ylabel("P(X ≥ x)")
    ax.legend(fontsize=7)
    return ax


__all__ = [
    "PowerLawFit",
    "TruncatedPowerLawFit",
    "check_sample",
    "fit_power_law",
    "fit_report",
    "fit_truncated_power_law",
    "log_normaliser",
    "plot_ccdf",
    "power_law_gof",
    "report_dict",
    "sample_power_law",
    "sample_truncated_power_law",
]
