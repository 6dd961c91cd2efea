"""Fitting heavy-tailed distributions: power law (Clauset, Shalizi & Newman 2009) and bounded power law.

What is here
------------
* ``fit_power_law``: maximum-likelihood power law ``p(x) ∝ x^-alpha`` for ``x >= x_min``, with ``x_min``
  chosen by minimising the Kolmogorov-Smirnov (KS) distance over candidate values (Clauset 2009, §3.3).
  Discrete data (degrees) use the exact discrete likelihood ``p(x) = x^-alpha / zeta(alpha, x_min)``
  (Hurwitz zeta), maximised numerically; continuous data (ESD eigenvalues) the closed form
  ``alpha = 1 + n / sum(log(x / x_min))``.
* The result classes ``PowerLawFit`` and ``TruncatedPowerLawFit``, input validation (``check_sample``)
  and ``plot_ccdf``, the log-log CCDF figure of both fits.

The rest of the power-law stack, each module importing only the ones above it:

* ``powerlaw_norm``: the normaliser ``Z(alpha, lo, hi)`` (Hurwitz zeta, finite sums, integrals), its
  alpha-derivatives and the vectorised likelihood-equation solver (``log_normaliser``, ``solve_alpha``).
* ``powerlaw_ks``: the vectorised exact KS distances of many fits at once (``ks_argmin``).
* this module, then ``powerlaw_tpl`` (``fit_truncated_power_law``, the power law with hard bounds
  ``p(x) = x^-alpha / sum_{k=x_min}^{x_max} k^-alpha``), ``powerlaw_sampling`` (samplers and
  ``power_law_gof``, the bootstrap p-value of Clauset 2009 §4.1) and ``powerlaw_compare``
  (likelihood-ratio tests against alternative laws).
* ``powerlaw_report``: all of it on one sample (``fit_sample``, ``fit_report``).

Every public name is also importable from ``ncap.network``.

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

The KS distance (``ks_variant``) is explained in :mod:`ncap.network.powerlaw_ks`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ncap.network.powerlaw_ks import check_variant, ks_argmin, unique_counts
from ncap.network.powerlaw_norm import log_normaliser, solve_alpha

__all__ = [
    "ALPHA_MAX",
    "MIN_SAMPLES",
    "PowerLawFit",
    "TruncatedPowerLawFit",
    "check_sample",
    "fit_power_law",
    "plot_ccdf",
]

MIN_SAMPLES = 10
ALPHA_MAX = 50.0


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
        return _report_fields(self, ("alpha", "alpha_se", "xmin", "n_tail", "ks", "p_value"))


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
        return _report_fields(self, ("alpha", "xmin", "xmax", "ks", "n_tail"))


def _num(x: float) -> int | float:
    """Integral floats as int (degrees read better as 7 than 7.0), others as float."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


# JSON type of every report field: support bounds as _num, counts as int, the rest float (p_value may be None)
_FIELD_TYPES = {"alpha": float, "alpha_se": float, "xmin": _num, "xmax": _num, "n_tail": int, "ks": float,
                "p_value": lambda v: None if v is None else float(v)}


def _report_fields(fit, names: tuple[str, ...]) -> dict:
    """``{name: JSON-ready value}`` of the fields ``names`` of a fit, in that order."""
    return {k: _FIELD_TYPES[k](getattr(fit, k)) for k in names}


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
        alpha, d2, at_bound = solve_alpha(
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
        ks[ok], _ = ks_argmin(
            u, c, c_below, a=alpha[ok], v=v[ok], hi=inf[ok], log_z=log_z, n_fit=n_t[ok],
            start=start[ok], stop=np.full(ok.size, u.size), discrete=discrete, variant=variant,
            valid=valid if valid.any() else np.ones_like(valid),
        )
    return alpha, se, at_bound, ks, n_t


def _xmin_candidates(u: np.ndarray, xmin, xmin_candidates, discrete: bool) -> np.ndarray:
    """The xmin values to search, shape (k,): ``xmin`` alone, the given candidates that are usable, or every
    distinct value ``u`` (sorted, shape (m,)) except the two largest."""
    if xmin is not None:
        if not float(xmin) > 0 or (discrete and not float(xmin).is_integer()):
            raise ValueError(f"xmin must be a positive{' integer' if discrete else ''}, got {xmin!r}")
        return np.array([float(xmin)])
    if xmin_candidates is not None:
        cand = np.unique(np.asarray(xmin_candidates, dtype=np.float64).ravel())
        if discrete:
            cand = np.ceil(cand)
        cand = cand[(cand > 0) & (cand <= u[-1])]
        if not cand.size:
            raise ValueError("no usable xmin candidate (all <= 0 or above the largest value)")
        return cand
    if u.size < 3:
        raise ValueError(f"need at least 3 distinct values to search xmin, got {u.size}")
    return u[:-2]


def _best_xmin(ks: np.ndarray, at_bound: np.ndarray, alpha_max: float) -> int:
    """Index of the smallest KS distance among candidates whose alpha is interior (of all finite ones, with a
    warning, when none is)."""
    valid = ~at_bound & np.isfinite(ks)
    if valid.any():
        return int(np.argmin(np.where(valid, ks, np.inf)))
    warnings.warn(
        f"power-law alpha sits on the search bound alpha_max={alpha_max} for every xmin candidate; "
        "the tail is too steep (or too concentrated on xmin) to estimate alpha",
        RuntimeWarning,
        stacklevel=3,
    )
    return int(np.argmin(np.where(np.isfinite(ks), ks, np.inf)))


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
    check_variant(ks_variant)
    x = check_sample(data, discrete=discrete)
    u, c = unique_counts(x, discrete)
    n = x.size
    logu = np.log(u)
    n_suf = np.cumsum(c[::-1])[::-1]
    slog_suf = np.cumsum((c * logu)[::-1])[::-1]
    c_below = n - n_suf
    cand = _xmin_candidates(u, xmin, xmin_candidates, discrete)
    start = np.searchsorted(u, cand, side="left")
    keep = start < u.size
    cand, start = cand[keep], start[keep]
    if not cand.size:
        raise ValueError(f"no data at or above xmin={xmin!r}")
    alpha, se, at_bound, ks, n_t = _fit_candidates(
        u, c, c_below, n_suf, slog_suf, cand, start, discrete=discrete, alpha_max=alpha_max, variant=ks_variant
    )
    best = _best_xmin(ks, at_bound, alpha_max)
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


# --------------------------------------------------------------------------- plot


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
    u, c = unique_counts(x, fit.discrete)
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
