"""Likelihood-ratio comparison of a power-law tail with alternative heavy-tailed laws (Clauset 2009, §5).

Every alternative is fitted by maximum likelihood on the same tail ``x >= xmin`` as the power law, in
the same (discrete or continuous) form, and compared with the power law by Vuong's test:

* ``R = sum_i [log p_PL(x_i) - log p_alt(x_i)]``; reported *normalised*, ``R / (sqrt(n) sigma)`` with
  ``sigma`` the standard deviation of the pointwise differences, so ``R > 0`` favours the power law;
* ``p = erfc(|R_norm| / sqrt(2))``, the two-sided probability of a ratio this far from zero when both
  laws are equally good (Clauset eq. 5.3-5.5; ``powerlaw.loglikelihood_ratio``);
* for the nested pair (power law inside the cutoff power law) ``p`` is the likelihood-ratio test
  ``chi2_1.sf(2 |R_raw|)``, as Clauset §5.2 and ``powerlaw``'s ``distribution_compare`` do.

Alternatives (names as returned):

``exponential``
    discrete ``(1 - e^-lam) e^(-lam (x - xmin))``, continuous ``lam e^(-lam (x - xmin))``; closed-form MLE.
``lognormal``
    continuous: the lognormal density renormalised on ``x >= xmin``; discrete: mass of ``[x-1/2, x+1/2]``
    renormalised on ``[xmin-1/2, inf)`` (``powerlaw``'s "round" discretisation); numerical MLE.
``cutoff_power_law``
    ``x^-alpha e^(-lam x)`` (``powerlaw``'s ``truncated_power_law``; not the hard-bounded law of
    ``powerlaw_tpl.fit_truncated_power_law``); numerical MLE, the normaliser summed directly over
    the first 4096 integers plus a quadrature tail.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import integrate, optimize, special, stats

from ncap.network.powerlaw import PowerLawFit, check_sample
from ncap.network.powerlaw_ks import unique_counts
from ncap.network.powerlaw_norm import log_normaliser

ALTERNATIVES = ("lognormal", "exponential", "cutoff_power_law")
_DIRECT = 4096


def _tail(data, fit: PowerLawFit):
    x = check_sample(data, discrete=fit.discrete)
    u, c = unique_counts(x[x >= fit.xmin], fit.discrete)
    return u, c.astype(np.float64)


# --------------------------------------------------------------------------- pointwise log-likelihoods


def power_law_loglik(u: np.ndarray, fit: PowerLawFit) -> np.ndarray:
    """``log p(u)`` under the fitted power law, for tail values ``u`` (shape (k,))."""
    lz = log_normaliser(fit.alpha, fit.xmin, np.inf, discrete=fit.discrete)[0]
    return -fit.alpha * np.log(u) - lz


def _exponential(u, c, xmin, discrete):
    mean = float(np.sum(c * (u - xmin)) / c.sum())
    if mean <= 0:
        return {"lam": math.inf}, np.full(u.size, -np.inf)
    if discrete:
        lam = math.log1p(1.0 / mean)
        ll = math.log(-math.expm1(-lam)) - lam * (u - xmin)
    else:
        lam = 1.0 / mean
        ll = math.log(lam) - lam * (u - xmin)
    return {"lam": lam}, ll


def _log_diff_ndtr(z_lo, z_hi):
    """``log(Phi(z_hi) - Phi(z_lo))`` for ``z_lo < z_hi``, accurate in both tails."""
    upper = z_lo > 0  # both in the upper tail: use survival functions
    a = np.where(upper, special.log_ndtr(-z_lo), special.log_ndtr(z_hi))
    b = np.where(upper, special.log_ndtr(-z_hi), special.log_ndtr(z_lo))
    with np.errstate(divide="ignore"):
        return a + np.log1p(-np.exp(b - a))


def _lognormal_ll(params, u, xmin, discrete):
    mu, log_sigma = params
    sigma = math.exp(log_sigma)
    if discrete:
        z_lo = (np.log(u - 0.5) - mu) / sigma
        z_hi = (np.log(u + 0.5) - mu) / sigma
        norm = special.log_ndtr(-(math.log(xmin - 0.5) - mu) / sigma)
        return _log_diff_ndtr(z_lo, z_hi) - norm
    z = (np.log(u) - mu) / sigma
    norm = special.log_ndtr(-(math.log(xmin) - mu) / sigma)
    return -np.log(u) - log_sigma - 0.5 * math.log(2 * math.pi) - 0.5 * z * z - norm


def _lognormal(u, c, xmin, discrete):
    logu = np.log(u)
    m = float(np.sum(c * logu) / c.sum())
    s = float(np.sqrt(np.sum(c * (logu - m) ** 2) / c.sum())) or 1.0

    def nll(p):
        v = -np.sum(c * _lognormal_ll(p, u, xmin, discrete))
        return v if np.isfinite(v) else 1e300

    best = None
    for start in ((m, math.log(s)), (m - 2 * s, math.log(2 * s))):
        r = optimize.minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10,
                                                                         "maxiter": 4000})
        if best is None or r.fun < best.fun:
            best = r
    mu, ls = best.x
    return {"mu": float(mu), "sigma": float(math.exp(ls))}, _lognormal_ll(best.x, u, xmin, discrete)


def _log_cutoff_integral(alpha, lam, lo, xmin):
    """``log integral_lo^inf (x/xmin)^-alpha e^(-lam (x - xmin)) dx`` for ``lam > 0``.

    With ``x = lo e^y`` the integrand becomes ``exp((1-alpha) y - lam lo (e^y - 1))`` (times constants), a
    smooth unimodal function integrated by quadrature on both sides of its mode.
    """
    b, k = 1.0 - alpha, lam * lo
    y_mode = math.log(b / k) if b > k else 0.0

    log_k = math.log(k)

    def log_g(y):
        if y < 700.0:
            return b * y - k * math.expm1(y)
        return -math.inf if log_k + y > 700.0 else b * y - math.exp(log_k + y)

    g_mode = log_g(y_mode)
    f = lambda y: math.exp(log_g(y) - g_mode)
    total = integrate.quad(f, y_mode, np.inf, limit=200)[0]
    if y_mode > 0:
        total += integrate.quad(f, 0.0, y_mode, limit=200)[0]
    return math.log(lo) - alpha * math.log(lo / xmin) - lam * (lo - xmin) + g_mode + math.log(total)


def _cutoff_log_norm(alpha, lam, xmin, discrete):
    """``log sum_{x>=xmin} x^-alpha e^(-lam x)`` (discrete) or the integral over ``[xmin, inf)``."""
    if lam <= 0:
        if alpha <= 1:
            return math.inf
        return float(log_normaliser(alpha, xmin, np.inf, discrete=discrete)[0])
    base = -alpha * math.log(xmin) - lam * xmin  # log of the integrand at xmin
    if not discrete:
        return base + _log_cutoff_integral(alpha, lam, xmin, xmin)
    x = xmin + np.arange(_DIRECT, dtype=np.float64)
    log_t = -alpha * np.log(x / xmin) - lam * (x - xmin)
    top = float(log_t.max())
    total = float(np.sum(np.exp(log_t - top)))
    # remaining terms x >= xmin + _DIRECT by the midpoint rule (relative error O((alpha/x + lam)^2 / 24))
    tail = _log_cutoff_integral(alpha, lam, xmin + _DIRECT - 0.5, xmin)
    return base + top + math.log(total + math.exp(tail - top)) if tail - top > -745 else base + top + math.log(total)


def _cutoff(u, c, xmin, discrete, pl: PowerLawFit, pl_ll):
    logu = np.log(u)
    s_log, s_x, n = float(np.sum(c * logu)), float(np.sum(c * u)), float(c.sum())

    def nll(p):
        alpha, lam = p[0], math.exp(p[1])
        lz = _cutoff_log_norm(alpha, lam, xmin, discrete)
        v = alpha * s_log + lam * s_x + n * lz
        return v if np.isfinite(v) else 1e300

    mean = s_x / n
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for start in ((pl.alpha, math.log(1e-3 / mean)), (max(pl.alpha - 1.0, 0.5), math.log(1.0 / mean))):
            r = optimize.minimize(nll, start, method="Nelder-Mead",
                                  options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 2000})
            if best is None or r.fun < best.fun:
                best = r
    alpha, lam = float(best.x[0]), float(math.exp(best.x[1]))
    ll = -alpha * logu - lam * u - _cutoff_log_norm(alpha, lam, xmin, discrete)
    if np.sum(c * ll) < np.sum(c * pl_ll):  # nested: never worse than lam = 0 (optimiser stopped short)
        return {"alpha": pl.alpha, "lam": 0.0}, pl_ll.copy()
    return {"alpha": alpha, "lam": lam}, ll


def fit_alternatives(data, fit: PowerLawFit) -> dict[str, dict]:
    """MLE of each alternative on the tail ``x >= fit.xmin``.

    Returns
    -------
    dict
        ``{name: {"params": {...}, "loglik": float}}`` plus ``"power_law": {"loglik": float}``
        (total log-likelihoods of the tail, natural log).
    """
    u, c = _tail(data, fit)
    pl_ll = power_law_loglik(u, fit)
    out = {"power_law": {"params": {"alpha": fit.alpha}, "loglik": float(np.sum(c * pl_ll))}}
    for name, (params, ll) in _alternatives(u, c, fit, pl_ll).items():
        out[name] = {"params": params, "loglik": float(np.sum(c * ll))}
    return out


def _alternatives(u, c, fit, pl_ll):
    return {
        "lognormal": _lognormal(u, c, fit.xmin, fit.discrete),
        "exponential": _exponential(u, c, fit.xmin, fit.discrete),
        "cutoff_power_law": _cutoff(u, c, fit.xmin, fit.discrete, fit, pl_ll),
    }


# --------------------------------------------------------------------------- the test


def loglikelihood_ratio(ll1, ll2, weights=None, *, nested: bool = False) -> tuple[float, float]:
    """Normalised log-likelihood ratio ``R / (sqrt(n) sigma)`` and its p-value (Vuong / nested LR test).

    Parameters
    ----------
    ll1, ll2 : array_like, shape (k,)
        Pointwise log-likelihoods under the two models (model 1 favoured when R > 0).
    weights : array_like, shape (k,), optional
        Multiplicity of each point (counts of unique values); default all ones.
    nested : bool
        Model 1 is a special case of model 2: ``p = chi2_1.sf(2 |R|)`` instead of Vuong's ``erfc``.

    Returns
    -------
    (R_normalised, p) : (float, float)
        ``R`` is 0 and ``p`` is 1 when the two models agree at every point.
    """
    ll1, ll2 = np.asarray(ll1, dtype=np.float64), np.asarray(ll2, dtype=np.float64)
    w = np.ones_like(ll1) if weights is None else np.asarray(weights, dtype=np.float64)
    floor = math.log(np.finfo(np.float64).tiny)
    d = np.maximum(ll1, floor) - np.maximum(ll2, floor)
    n = float(w.sum())
    r = float(np.sum(w * d))
    sd = math.sqrt(float(np.sum(w * (d - r / n) ** 2)) / n)
    if n == 0 or sd == 0:
        return 0.0, 1.0
    r_norm = r / (math.sqrt(n) * sd)
    p = float(stats.chi2.sf(abs(2 * r), 1)) if nested else float(special.erfc(abs(r_norm) / math.sqrt(2)))
    return float(r_norm), p


def compare_distributions(data, fit: PowerLawFit) -> dict[str, tuple[float, float]]:
    """Power law against ``lognormal``, ``exponential`` and ``cutoff_power_law`` on the tail of ``fit``.

    Parameters
    ----------
    data : array_like, shape (n,)
        The sample ``fit`` was computed on.
    fit : PowerLawFit

    Returns
    -------
    dict
        ``{name: (R, p)}``: normalised log-likelihood ratio (``R > 0`` favours the power law) and the
        two-sided p-value of its sign (chi-squared LR test for the nested ``cutoff_power_law``).
    """
    u, c = _tail(data, fit)
    pl_ll = power_law_loglik(u, fit)
    return {
        name: loglikelihood_ratio(pl_ll, ll, c, nested=name == "cutoff_power_law")
        for name, (_, ll) in _alternatives(u, c, fit, pl_ll).items()
    }


def best_alternative(comparisons: dict, significance: float = 0.1) -> str:
    """Name of the alternative most strongly preferred over the power law, or ``"power_law"``.

    An alternative counts only if ``R < 0`` with ``p < significance``; among those the most negative
    ``R`` wins. ``comparisons`` is ``compare_distributions``' output (tuples) or the report form
    (``{"R": ..., "p": ...}``).
    """
    best, best_r = "power_law", 0.0
    for name, val in comparisons.items():
        r, p = (val["R"], val["p"]) if isinstance(val, dict) else val
        if r < best_r and p < significance:
            best, best_r = name, r
    return best


__all__ = [
    "ALTERNATIVES",
    "best_alternative",
    "compare_distributions",
    "fit_alternatives",
    "loglikelihood_ratio",
    "power_law_loglik",
]
