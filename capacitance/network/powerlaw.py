"""Fitting heavy-tailed distributions: power law (Clauset, Shalizi & Newman 2009) and bounded power law.

What is here
------------
* ``fit_power_law``: maximum-likelihood power law ``p(x) ∝ x^-alpha`` for ``x >= x_min``, with ``x_min``
  chosen by minimising the Kolmogorov-Smirnov (KS) distance over candidate values (Clauset 2009, §3.3).
  Discrete data (degrees) use the exact discrete likelihood ``p(x) = x^-alpha / zeta(alpha, x_min)``
  (Hurwitz zeta), maximised numerically; continuous data (ESD eigenvalues) the closed form
  ``alpha = 1 + n / sum(log(x / x_min))``.
* The result classes ``PowerLawFit`` and ``TruncatedPowerLawFit``, input validation (``check_sample``)
  and the vectorised exact KS distances shared by both fits.
* ``fit_report`` / ``plot_ccdf``: a JSON-ready summary (fits, likelihood-ratio comparisons from
  ``capacitance.powerlaw_compare``) and the log-log CCDF figure.

Related modules, whose public names are also importable from here:

* ``capacitance.powerlaw_norm``: the normaliser ``Z(alpha, lo, hi)`` (Hurwitz zeta, finite sums,
  integrals), its alpha-derivatives and the vectorised likelihood-equation solver (``log_normaliser``).
* ``capacitance.powerlaw_tpl``: ``fit_truncated_power_law``, the discrete power law with hard bounds,
  ``p(x) = x^-alpha / sum_{k=x_min}^{x_max} k^-alpha``, with ``x_min`` and ``x_max`` searched (KS).
* ``capacitance.powerlaw_sampling``: ``sample_power_law``, ``sample_truncated_power_law`` and
  ``power_law_gof``, the semi-parametric bootstrap p-value of Clauset 2009 §4.1.

The last two build on this module, so their names are re-exported lazily (``__getattr__``, PEP 562): the
import graph stays acyclic and ``from capacitance.powerlaw import power_law_gof`` still works.

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

The KS distance
---------------
``ks_variant="sup"`` (default) is the exact supremum of |empirical CDF - model CDF|:
for discrete data it equals the maximum over all integers ``x_min <= x <= max(x)`` used by Clauset's
reference code ``plfit`` and by the degree study, and for continuous data the usual two-sided KS
statistic. ``ks_variant="left"`` is ``powerlaw`` 2.0's convention (both CDFs taken as ``P(X < x)`` and
compared only at the observed values); it can only be smaller, and it is what to use to reproduce
``powerlaw``'s ``x_min``.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ncap.capacitance.powerlaw_norm import _solve_alpha, log_normaliser

if TYPE_CHECKING:  # lazily re-exported below; imported here for type checkers and IDEs
    from ncap.capacitance.powerlaw_sampling import power_law_gof, sample_power_law, sample_truncated_power_law
    from ncap.capacitance.powerlaw_tpl import fit_truncated_power_law

MIN_SAMPLES = 10
ALPHA_MAX = 50.0
KS_VARIANTS = ("sup", "left")

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
    from ncap.capacitance.powerlaw_compare import compare_distributions
    from ncap.capacitance.powerlaw_sampling import power_law_gof
    from ncap.capacitance.powerlaw_tpl import fit_truncated_power_law

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


# --------------------------------------------------------------------------- re-exports

# names defined in modules that import this one; resolved on first access (PEP 562)
_LAZY = {
    "TPL_ALPHA_BOUNDS": "ncap.capacitance.powerlaw_tpl",
    "fit_truncated_power_law": "ncap.capacitance.powerlaw_tpl",
    "power_law_gof": "ncap.capacitance.powerlaw_sampling",
    "sample_power_law": "ncap.capacitance.powerlaw_sampling",
    "sample_truncated_power_law": "ncap.capacitance.powerlaw_sampling",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
