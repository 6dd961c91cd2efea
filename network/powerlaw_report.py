"""The whole power-law analysis of one sample: power law (optionally with its bootstrap p-value), bounded
power law and the likelihood-ratio comparisons, as objects (:func:`fit_sample`) or one JSON-ready dict
(:func:`fit_report`, what ``ncap powerlaw --json`` prints).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ncap.network.powerlaw import PowerLawFit, TruncatedPowerLawFit, check_sample, fit_power_law
from ncap.network.powerlaw_compare import compare_distributions
from ncap.network.powerlaw_sampling import power_law_gof
from ncap.network.powerlaw_tpl import fit_truncated_power_law

__all__ = ["SampleFits", "fit_report", "fit_sample"]


@dataclass(frozen=True)
class SampleFits:
    """Both fits of one sample and ``{alternative: (R, p)}`` from :func:`compare_distributions`."""

    power_law: PowerLawFit
    truncated_power_law: TruncatedPowerLawFit
    comparisons: dict[str, tuple[float, float]]

    def to_dict(self) -> dict:
        """``{"power_law": {...}, "truncated_power_law": {...}, "comparisons": {name: {"R", "p"}}, "n"}``."""
        return {
            "power_law": self.power_law.to_dict(),
            "truncated_power_law": self.truncated_power_law.to_dict(),
            "comparisons": {k: {"R": float(r), "p": float(p)} for k, (r, p) in self.comparisons.items()},
            "n": int(self.power_law.n),
        }


def fit_sample(data, n_bootstrap: int = 0, seed=None, *, discrete: bool = True) -> SampleFits:
    """Fit the power law (``p_value`` from ``n_bootstrap`` replicates, None for 0), the bounded power law,
    and compare the power law with the alternatives on its tail.

    Parameters
    ----------
    data : array_like, shape (n,)
        Positive observations (integers if ``discrete``).
    """
    x = check_sample(data, discrete=discrete)
    fit = fit_power_law(x, discrete=discrete)
    if n_bootstrap:
        fit = replace(fit, p_value=power_law_gof(x, fit, n_bootstrap=n_bootstrap, seed=seed))
    tpl = fit_truncated_power_law(x, discrete=discrete)
    return SampleFits(fit, tpl, compare_distributions(x, fit))


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
    return fit_sample(data, n_bootstrap, seed, discrete=discrete).to_dict()
