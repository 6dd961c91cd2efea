"""Sparse-training lab: sparse initialisation, dynamic sparse training (prune + regrow) and its topology.

Modules, each importing only the ones listed before it:

* ``init``: layer densities (uniform, Erdős–Rényi, ERK), fan-in profiles of profiled sparse networks
  (sources/003), masks and matched mean-fan-in weights.
* ``regrow``: one topology update of a layer: magnitude pruning with a cosine-decaying rate, regrowth by
  random (SET), gradient (RigL) or momentum (SNFS), exact counts.
* ``topology``: what the network looks like at every update (degrees, fan-in CV, Ω̂/Δ̂, k-shells, dormant
  neurons, gradient norms), incremental for MLPs.
* ``dst``: the configuration, the update as an optimiser step hook, and a minimal training loop.
* ``plots``: CCDFs by epoch, fan-in CV and dormant neurons over training.
"""
from ncap.models.sparse.dst import RULES, DSTConfig, DynamicSparsity, build_model, sparsify, train_dst
from ncap.models.sparse.init import (
    DENSITY_METHODS,
    PROFILES,
    fan_in_cv,
    fan_in_profile,
    init_sparse_weights,
    layer_densities,
    mask_from_fan_in,
    random_mask,
)
from ncap.models.sparse.regrow import REGROW_RULES, LayerUpdate, cosine_prune_rate, top_k_exact, update_layer
from ncap.models.sparse.topology import TopologyTracker, core_numbers_csr, gradient_ratio, layered_csr

__all__ = [
    "DENSITY_METHODS",
    "PROFILES",
    "REGROW_RULES",
    "RULES",
    "DSTConfig",
    "DynamicSparsity",
    "LayerUpdate",
    "TopologyTracker",
    "build_model",
    "core_numbers_csr",
    "cosine_prune_rate",
    "fan_in_cv",
    "fan_in_profile",
    "gradient_ratio",
    "init_sparse_weights",
    "layer_densities",
    "layered_csr",
    "mask_from_fan_in",
    "random_mask",
    "sparsify",
    "top_k_exact",
    "train_dst",
    "update_layer",
]
