"""Network science of (pruned) feed-forward networks: masks, node degrees, measures, power-law fitting.

Modules, each importing only the ones listed before it:

* ``masks``: the keep-mask buffer of a pruned layer and the prunable (Linear/Conv2d) layers of a model.
* ``degrees``: the network as a layered graph (:class:`SparseNetwork`) and its node degrees.
* ``powerlaw_norm``, ``powerlaw_ks``, ``powerlaw``, ``powerlaw_tpl``, ``powerlaw_sampling``,
  ``powerlaw_compare``, ``powerlaw_report``: fitting heavy-tailed distributions (Clauset et al. 2009), from
  the normaliser and the KS machinery up to the whole analysis of one sample (:func:`fit_report`).
* ``measures``: k-shells, dormant neurons, weight ESDs, preferential attachment.
* ``degree_report``: :func:`pruning_report`, the per-layer report of ``ncap prune``.

The public names below are importable from here; the vectorised solvers (``powerlaw_norm.solve_alpha``,
``powerlaw_ks.ks_argmin``) only from their modules.
"""
from ncap.network.degree_report import degree_fit, plot_degree_ccdfs, pruning_report
from ncap.network.degrees import (
    LayerConnections,
    LayerDegrees,
    NodeLayer,
    SparseNetwork,
    conv_counts,
    layer_degrees,
    linear_counts,
    network_from_model,
    network_from_weights,
)
from ncap.network.masks import (
    MASK_ATTR,
    PRUNABLE_TYPES,
    get_mask,
    layer_support,
    prunable_layers,
    remove_mask,
    set_mask,
)
from ncap.network.measures import (
    core_numbers,
    dormant_neurons,
    esd,
    esd_report,
    kshell,
    preferential_attachment,
)
from ncap.network.powerlaw import (
    ALPHA_MAX,
    MIN_SAMPLES,
    PowerLawFit,
    TruncatedPowerLawFit,
    check_sample,
    fit_power_law,
    plot_ccdf,
)
from ncap.network.powerlaw_compare import (
    ALTERNATIVES,
    best_alternative,
    compare_distributions,
    fit_alternatives,
    loglikelihood_ratio,
    power_law_loglik,
)
from ncap.network.powerlaw_ks import KS_VARIANTS
from ncap.network.powerlaw_norm import log_normaliser
from ncap.network.powerlaw_report import SampleFits, fit_report, fit_sample
from ncap.network.powerlaw_sampling import (
    power_law_gof,
    sample_power_law,
    sample_truncated_power_law,
)
from ncap.network.powerlaw_tpl import TPL_ALPHA_BOUNDS, fit_truncated_power_law

__all__ = [
    "ALPHA_MAX",
    "ALTERNATIVES",
    "KS_VARIANTS",
    "MASK_ATTR",
    "MIN_SAMPLES",
    "PRUNABLE_TYPES",
    "TPL_ALPHA_BOUNDS",
    "LayerConnections",
    "LayerDegrees",
    "NodeLayer",
    "PowerLawFit",
    "SampleFits",
    "SparseNetwork",
    "TruncatedPowerLawFit",
    "best_alternative",
    "check_sample",
    "compare_distributions",
    "conv_counts",
    "core_numbers",
    "degree_fit",
    "dormant_neurons",
    "esd",
    "esd_report",
    "fit_alternatives",
    "fit_power_law",
    "fit_report",
    "fit_sample",
    "fit_truncated_power_law",
    "get_mask",
    "kshell",
    "layer_degrees",
    "layer_support",
    "linear_counts",
    "log_normaliser",
    "loglikelihood_ratio",
    "network_from_model",
    "network_from_weights",
    "plot_ccdf",
    "plot_degree_ccdfs",
    "power_law_gof",
    "power_law_loglik",
    "preferential_attachment",
    "prunable_layers",
    "pruning_report",
    "remove_mask",
    "sample_power_law",
    "sample_truncated_power_law",
    "set_mask",
]
