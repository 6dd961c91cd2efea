"""Masks of a pruned network: which weights of its Linear/Conv2d layers are connections.

A pruned layer carries a boolean keep-mask (True = connection kept) in the non-persistent buffer
``ncap_weight_mask``: it moves with ``.to()``, is copied by ``deepcopy`` and is absent from ``state_dict``
(why ncap does not use ``torch.nn.utils.prune``: see :mod:`ncap.models.pruning`, which sets the masks).
This module is the one place that names the buffer: reading, writing and removing it, the prunable layers
of a model in forward order, and the support (connections) of a layer, which degree counting reads.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = [
    "MASK_ATTR",
    "PRUNABLE_TYPES",
    "get_mask",
    "layer_support",
    "prunable_layers",
    "remove_mask",
    "set_mask",
]

MASK_ATTR = "ncap_weight_mask"
PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


def prunable_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """All Linear/Conv2d modules of ``model`` as ``(qualified name, module)``.

    Order: execution order of one forward pass on ``example_input`` when it is given (a module called
    twice is listed once, at its first call; modules never called are dropped), otherwise registration
    order (``named_modules``), which is the forward order of ``nn.Sequential`` models and of most
    hand-written networks.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if example_input is None:
        return named
    order: list[int] = []
    ids = {id(m): i for i, (_, m) in enumerate(named)}
    handles = []

    def hook(mod, _inp, _out):
        i = ids[id(mod)]
        if i not in order:
            order.append(i)

    for _, m in named:
        handles.append(m.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_input)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return [named[i] for i in order]


def get_mask(module: nn.Module) -> torch.Tensor | None:
    """The keep-mask of ``module`` (bool, the weight's shape), or None if it is not pruned."""
    return getattr(module, MASK_ATTR, None)


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Store ``mask`` (bool, the weight's shape) as ``module``'s keep-mask buffer."""
    if get_mask(module) is None:
        module.register_buffer(MASK_ATTR, mask, persistent=False)
    else:
        setattr(module, MASK_ATTR, mask)


def remove_mask(module: nn.Module) -> None:
    """Drop ``module``'s keep-mask buffer (no-op when it has none)."""
    if hasattr(module, MASK_ATTR):
        delattr(module, MASK_ATTR)


def layer_support(module: nn.Module, mask: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Connections of a Linear/Conv2d layer as a bool array of the weight's shape.

    ``mask`` given: exactly that mask. Otherwise the layer's keep-mask restricted to nonzero weights,
    or, for a layer without a mask, its nonzero weights.
    """
    if mask is None:
        nonzero = module.weight.detach() != 0
        own = get_mask(module)
        mask = nonzero if own is None else own & nonzero
    return (mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).astype(bool)
