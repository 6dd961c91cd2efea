"""The probe's line graph and its interaction matrix P, built densely (the reference).

Notation (one node of the line graph per weight; biases are not nodes):

    W^(l)         weight of the l-th Linear layer of the probe, shape (n_l, n_{l-1}), l = 1..m
                  (the m-th layer is the classifier head); flattened row-major, layers concatenated.
    C             batch-mean loss on the given batch (x, y).
    P^(l,l+1)     = ∂²C / ∂W^(l) ∂W^(l+1)           rows: weights of layer l, columns: layer l+1
    P             block matrix with P^(l,l+1) on the first block super-diagonal, 0 elsewhere

Variants (``VARIANTS``):

    "default"     P as above (signed).
    "support"     P ⊙ S, S[(b,a),(c,b')] = [b = b']: only weights that share a neuron interact
                  (W^(l)[b,a] enters neuron b, W^(l+1)[c,b'] leaves neuron b'): the line graph's edges.
    "magnitude"   |P| (element-wise absolute value): non-negative, so 1ᵀP1 cannot pass through zero.

This module materialises P and is meant for small probes (tests, teaching, debugging);
``capacitance.beta_eff`` computes the same reductions without building P.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("default", "support", "magnitude")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Modules allowed between two Linear layers of a probe: element-wise, per-sample maps. The support
# and magnitude variants rely on this (per-sample Jacobians); the default variant does not.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Identity, nn.Dropout)


class ProbeError(ValueError):
    """The module cannot serve as a capacitance probe (shape, depth, or structure)."""


def probe_linear_layers(probe: nn.Module) -> list[nn.Linear]:
    """The probe's Linear layers in module order (the last one is the head)."""
    return [m for m in probe.modules() if isinstance(m, nn.Linear)]


def check_probe(probe: nn.Module, *, elementwise_only: bool = False) -> list[nn.Linear]:
    """Validate a probe and return its Linear layers.

    Raises ``ProbeError`` when β_eff would be structurally zero or undefined:

    * fewer than 4 Linear layers (3 hidden + head). Softmax cross-entropy is invariant to adding the
      same amount to every logit, so 1ᵀ∂C/∂W^(m) ≡ 0 and the block feeding the head has zero row sums:
      s_in^(m-1) = 0. β_eff's numerator is Σ_{l=2}^{m-1} s_out^(l)·s_in^(l), so for m ≤ 3 it is ≡ 0.
    * consecutive Linear layers whose widths do not chain (out_features of l ≠ in_features of l+1).
    * with ``elementwise_only``: any module other than Linear and element-wise activations.
    """
    layers = probe_linear_layers(probe)
    if len(layers) < 4:
        raise ProbeError(
            f"probe has {len(layers)} Linear layer(s); the capacitance probe needs at least 3 hidden Linear "
            "layers plus the classifier head. With fewer, beta_eff is structurally 0 under softmax "
            "cross-entropy (the head's all-ones direction is flat, so the block feeding the head has zero "
            "row sums)."
        )
    for i, (a, b) in enumerate(itertools.pairwise(layers), start=1):
        if a.out_features != b.in_features:
            raise ProbeError(
                f"Linear layers {i} and {i + 1} do not chain: out_features={a.out_features} but the next "
                f"layer has in_features={b.in_features}"
            )
    if elementwise_only:
        for name, m in probe.named_modules():
            if m is probe or isinstance(m, (nn.Linear, nn.Sequential) + ELEMENTWISE):
                continue
            if len(list(m.children())) == 0:
                raise ProbeError(
                    f"module {name!r} ({type(m).__name__}) is not Linear or an element-wise activation; "
                    "the 'support' and 'magnitude' variants need a per-sample Linear/activation chain"
                )
    return layers


def weight_layout(layers: list[nn.Linear]) -> list[tuple[int, int]]:
    """(start, stop) offsets of each layer's flattened weight in the concatenated weight vector."""
    offsets, start = [], 0
    for layer in layers:
        offsets.append((start, start + layer.weight.numel()))
        start += layer.weight.numel()
    return offsets


def support_mask(layer_l: nn.Linear, layer_next: nn.Linear) -> torch.Tensor:
    """S^(l,l+1), shape (n_l·n_{l-1}, n_{l+1}·n_l): 1 where W^(l)[b,a] and W^(l+1)[c,b'] share neuron b = b'."""
    n_l, n_prev = layer_l.weight.shape
    n_next = layer_next.out_features
    b_row = torch.arange(n_l).repeat_interleave(n_prev)  # row index (b,a) -> b
    b_col = torch.arange(n_l).repeat(n_next)  # column index (c,b') -> b'
    return (b_row[:, None] == b_col[None, :]).to(layer_l.weight.dtype)


def interaction_matrix(
    probe: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
    variant: str = "default",
) -> torch.Tensor:
    """Dense interaction matrix P of the probe's line graph (reference implementation).

    Parameters
    ----------
    probe : nn.Module
        Module whose Linear layers, in order, form the probe (≥ 3 hidden + head).
    x : Tensor, shape (B, in_features)
        Probe input (backbone features) for one batch.
    y : Tensor, shape (B,)
        Targets for ``loss_fn``.
    loss_fn : callable
        Batch-mean loss ``loss_fn(logits, y) -> scalar``.
    variant : {"default", "support", "magnitude"}

    Returns
    -------
    P : Tensor, shape (N_w, N_w)
        N_w = total number of Linear weights; block (l, l+1) holds ∂²C/∂W^(l)∂W^(l+1), rows = layer l.

    Builds one Hessian column per weight of layers 2..m by double backward: cost O(N_w) backward
    passes, memory O(N_w²). Use only for small probes.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    layers = check_probe(probe)
    weights = [layer.weight for layer in layers]
    layout = weight_layout(layers)
    n_w = layout[-1][1]
    loss = loss_fn(probe(x), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    P = torch.zeros(n_w, n_w, dtype=weights[0].dtype, device=weights[0].device)
    for l in range(len(layers) - 1):  # block (l, l+1), 0-based
        g_next = grads[l + 1].reshape(-1)
        (r0, r1), (c0, c1) = layout[l], layout[l + 1]
        for j in range(g_next.numel()):
            # column j of the block: ∂/∂W^(l) of ∂C/∂w_j, w_j in layer l+1
            (col,) = torch.autograd.grad(g_next[j], weights[l], retain_graph=True, allow_unused=True)
            if col is not None:
                P[r0:r1, c0 + j] = col.reshape(-1)
        if variant == "support":
            P[r0:r1, c0:c1] *= support_mask(layers[l], layers[l + 1])
    if variant == "magnitude":
        P = P.abs()
    return P.detach()


def reduce_dense(P: torch.Tensor, w: torch.Tensor | None = None) -> dict[str, float]:
    """Gao–Barzel–Barabási reduction of an explicit P (Nature 2016), literally as written:

        s_in  = P·1          s_out = Pᵀ·1
        β_eff = 1ᵀP·s_in / 1ᵀP·1 = (s_out · s_in) / (1ᵀ s_in)
        x_eff = 1ᵀP·w / 1ᵀP·1    = (s_out · w) / (1ᵀ s_in)
    """
    ones = torch.ones(P.shape[0], dtype=P.dtype, device=P.device)
    s_in = P @ ones
    s_out = P.T @ ones
    numerator = float(s_out @ s_in)
    denominator = float(ones @ s_in)
    nan = float("nan")
    out = {"numerator": numerator, "denominator": denominator,
           "beta_eff": numerator / denominator if denominator else nan}
    if w is not None:
        out["x_eff"] = float(s_out @ w) / denominator if denominator else nan
    return out
