"""Normaliser of the power law ``x^-alpha`` on ``[lo, hi]``, its alpha-derivatives, and the vectorised MLE.

The normaliser is ``Z(alpha, lo, hi) = sum_{x=lo}^{hi} x^-alpha`` over integers (discrete data) or
``integral_lo^hi x^-alpha dx`` (continuous data). ``log_normaliser`` returns ``log Z``; ``_log_norm_derivs``
also its first two derivatives in ``alpha``; ``solve_alpha`` solves the likelihood equation
``d/dalpha log Z + mean(log x) = 0`` for many ``(lo, hi)`` at once. They serve the power-law fit
(``hi = inf``: the Hurwitz zeta likelihood of Clauset, Shalizi & Newman 2009), the bounded power law
(``powerlaw_tpl``), the samplers and the plots.

Numerics
--------
Sums ``Z(alpha, lo, hi) = sum_{x=lo}^{hi} x^-alpha`` (``hi`` finite or infinite; for ``hi = inf`` this is
``scipy.special.zeta(alpha, lo)``) are computed by ``_power_sum``: direct summation of the first terms,
then Euler-Maclaurin with five Bernoulli corrections from ``x >= 2|alpha| + 14`` on, everything scaled by
``lo^alpha`` (or ``hi^alpha`` for ``alpha < 0``) so that nothing underflows, and valid for any real
``alpha`` (needed by the bounded law). Derivatives in ``alpha`` are analytic for the direct terms and
central differences for the smooth Euler-Maclaurin part.
"""
from __future__ import annotations

import numpy as np

# B_{2j} / (2j)!, j = 1..5 (Euler-Maclaurin corrections)
_BERNOULLI = (1.0 / 12, -1.0 / 720, 1.0 / 30240, -1.0 / 1209600, 1.0 / 47900160)


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


def solve_alpha(mean_log, lo, hi, *, discrete, a_lo, a_hi, a0):
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


__all__ = ["log_normaliser", "solve_alpha"]
