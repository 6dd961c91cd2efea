"""Node degrees of a (sparse) feed-forward network, counted as in §3 of the power-law paper (sources/000).

The network as a layered graph
------------------------------
The Linear/Conv2d layers of a model, in forward order, are treated as a chain. Node layers are the
input of the first layer and the output of every layer; layer ``l`` connects node layer ``l`` (lower) to
node layer ``l + 1`` (upper). A *node* is

* a neuron (unit) for a Linear layer's output, and each input feature of the first Linear layer;
* a feature map (channel) for a Conv2d layer's output, and each input channel of the first Conv2d.

Connections between a lower node ``j`` and an upper node ``i`` (``counts[i, j]``):

* Linear: 1 if weight ``W[i, j]`` is unpruned, else 0. When a Linear layer follows a Conv layer through
  pooling/flatten, its ``in_features`` are grouped by channel (contiguous blocks of ``in_features / C``,
  the NCHW flatten order), so ``counts[i, c]`` = unpruned weights from map ``c`` into unit ``i``.
* Conv2d (the paper's rule): every filter weight is used once per output position, so
  ``counts[i, j] = nnz(W[i, j, :, :]) · H_out · W_out`` — the number of unpruned kernel taps times the
  size of the *upper* (output) feature map. Grouped convolutions connect only within their group.
  Padding is counted like the paper does (every weight × every output position).

Worked example (the paper's, unpruned, 28×28 input, 32C5-MP2-32C5): a conv1 map is 24×24, so it has
25 · 576 · 1 = 14 400 connections to the one input channel; conv2 maps are 8×8 (24 → pool 12 → 8), so each
conv1 map has 25 · 64 · 32 = 51 200 connections to the 32 conv2 maps; degree 65 600. Pooling layers have
no learnable connections and are skipped (they only change the upper layer's map size).

Degree of a node (paper's footnote 4 generalised): the sum of its connections through *pruned* layers.
So a node of the input layer counts only upper connections, a node of the last pruned layer only lower
ones (its upper layer, the output layer, is dense), and hidden nodes count both. Node layers touching no
pruned layer (e.g. the softmax output) are not reported. ``in_degree``/``out_degree`` are always the raw
counts on each side, whether pruned or not.

Branching networks (residual, attention) are not chains; the chain built from execution order is then
an approximation. A layer whose input size does not match the previous layer's nodes starts a new chain
segment (``strict=False``) or raises (``strict=True``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ncap.network.masks import get_mask, layer_support, prunable_layers

__all__ = [
    "LayerConnections",
    "LayerDegrees",
    "NodeLayer",
    "SparseNetwork",
    "conv_counts",
    "layer_degrees",
    "linear_counts",
    "network_from_model",
    "network_from_weights",
]


@dataclass
class LayerConnections:
    """Connection counts of one Linear/Conv2d layer: ``counts`` (n_upper, n_lower) int64."""

    name: str
    kind: str  # "linear" | "conv"
    counts: np.ndarray
    lower: int  # index of the lower node layer
    upper: int  # index of the upper node layer
    pruned: bool = True
    uses: int = 1  # times each weight is used (H_out * W_out for conv)

    @property
    def n_connections(self) -> int:
        return int(self.counts.sum())


@dataclass
class NodeLayer:
    name: str
    size: int
    kind: str  # "input" | "linear" | "conv"


@dataclass
class LayerDegrees:
    """Degrees of one node layer. ``degree`` follows the paper's rule (pruned sides only)."""

    name: str
    kind: str
    in_degree: np.ndarray
    out_degree: np.ndarray
    counts_lower: bool
    counts_upper: bool

    @property
    def degree(self) -> np.ndarray:
        d = np.zeros_like(self.in_degree)
        if self.counts_lower:
            d = d + self.in_degree
        if self.counts_upper:
            d = d + self.out_degree
        return d

    @property
    def size(self) -> int:
        return len(self.in_degree)

    def summary(self) -> dict:
        d = self.degree
        return {
            "layer": self.name,
            "kind": self.kind,
            "nodes": self.size,
            "sides": ("lower+upper" if self.counts_lower and self.counts_upper
                      else "lower" if self.counts_lower else "upper"),
            "degree_mean": float(d.mean()) if len(d) else 0.0,
            "degree_min": int(d.min()) if len(d) else 0,
            "degree_max": int(d.max()) if len(d) else 0,
            "zero_degree": int((d == 0).sum()),
        }


@dataclass
class SparseNetwork:
    """Node layers plus the connection counts of the layers between them."""

    nodes: list[NodeLayer]
    layers: list[LayerConnections]
    notes: list[str] = field(default_factory=list)

    def offsets(self) -> np.ndarray:
        """Global index of the first node of each node layer (length len(nodes) + 1)."""
        return np.concatenate([[0], np.cumsum([n.size for n in self.nodes])]).astype(np.int64)

    def degrees(self, *, reported_only: bool = True) -> list[LayerDegrees]:
        """Per node layer in/out/total degrees (see the module docstring for which sides count)."""
        n = len(self.nodes)
        ind = [np.zeros(nl.size, np.int64) for nl in self.nodes]
        outd = [np.zeros(nl.size, np.int64) for nl in self.nodes]
        low_pruned = [False] * n
        up_pruned = [False] * n
        for lc in self.layers:
            ind[lc.upper] += lc.counts.sum(1)
            outd[lc.lower] += lc.counts.sum(0)
            if lc.pruned:
                low_pruned[lc.upper] = True
                up_pruned[lc.lower] = True
        out = []
        for k, nl in enumerate(self.nodes):
            if reported_only and not (low_pruned[k] or up_pruned[k]):
                continue
            out.append(LayerDegrees(nl.name, nl.kind, ind[k], outd[k], low_pruned[k], up_pruned[k]))
        return out

    def adjacency(self, *, weighted: bool = True):
        """Symmetric scipy CSR adjacency over all nodes (all layers, pruned or not).

        ``weighted``: entries are connection counts (conv connections have multiplicity); otherwise 0/1.
        """
        import scipy.sparse as sp

        off = self.offsets()
        total = int(off[-1])
        rows, cols, vals = [], [], []
        for lc in self.layers:
            i, j = np.nonzero(lc.counts)
            v = lc.counts[i, j] if weighted else np.ones(len(i), np.int64)
            rows.append(i + off[lc.upper])
            cols.append(j + off[lc.lower])
            vals.append(v.astype(np.int64))
        if rows:
            r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            r = c = v = np.zeros(0, np.int64)
        a = sp.coo_matrix((v, (r, c)), shape=(total, total)).tocsr()
        return (a + a.T).tocsr()


# ------------------------------------------------------------------------------------------ counting


def linear_counts(nonzero: np.ndarray, n_lower: int | None = None) -> np.ndarray:
    """Counts (out, n_lower) of a Linear layer from its boolean support (out, in_features).

    With ``n_lower < in_features`` (Linear after flattened feature maps), inputs are grouped into
    ``n_lower`` contiguous blocks of ``in_features // n_lower`` (NCHW flatten order).
    """
    nz = np.asarray(nonzero).astype(bool)
    out_f, in_f = nz.shape
    n_lower = in_f if n_lower is None else int(n_lower)
    if n_lower == in_f:
        return nz.astype(np.int64)
    if n_lower <= 0 or in_f % n_lower:
        raise ValueError(f"Linear in_features={in_f} is not a multiple of the {n_lower} lower nodes")
    return nz.reshape(out_f, n_lower, in_f // n_lower).sum(2).astype(np.int64)


def conv_counts(nonzero: np.ndarray, out_hw: tuple[int, int] | int, groups: int = 1) -> np.ndarray:
    """Counts (C_out, C_in) of a Conv2d from its support (C_out, C_in/groups, kh, kw) and output size.

    ``counts[i, j] = nnz(W[i, j]) · H_out · W_out`` within each group, 0 across groups.
    """
    nz = np.asarray(nonzero).astype(bool)
    c_out, cpg, _, _ = nz.shape
    hw = int(np.prod(out_hw)) if not isinstance(out_hw, int) else int(out_hw)
    taps = nz.reshape(c_out, cpg, -1).sum(2).astype(np.int64) * hw
    if groups == 1:
        return taps
    opg = c_out // groups
    counts = np.zeros((c_out, cpg * groups), np.int64)
    for g in range(groups):
        counts[g * opg:(g + 1) * opg, g * cpg:(g + 1) * cpg] = taps[g * opg:(g + 1) * opg]
    return counts


def _output_sizes(model: nn.Module, layers: list[tuple[str, nn.Module]], example: torch.Tensor) -> dict[int, tuple]:
    sizes: dict[int, tuple] = {}
    handles = []
    for _, m in layers:
        def hook(mod, _inp, out):
            sizes.setdefault(id(mod), tuple(out.shape[2:]))
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return sizes


def network_from_model(model: nn.Module, *, input_shape: Sequence[int] | None = None,
                       example_input: torch.Tensor | None = None, pruned: Sequence[str] | None = None,
                       masks: dict | None = None, strict: bool = True) -> SparseNetwork:
    """Build the layered graph of ``model``'s Linear/Conv2d layers.

    Parameters
    ----------
    input_shape : (C, H, W) or (features,), optional
        Shape of one input (without batch); needed when the model has Conv2d layers (output map sizes)
        and used to order layers by execution. ``example_input`` (with batch dim) may be given instead.
    pruned : names of the pruned layers
        Default: layers carrying a pruning mask (:mod:`ncap.network.masks`), or, when none has one,
        every layer except the last (the dense output layer).
    masks : dict name → bool tensor, optional
        Supports to use instead of the model's masks / nonzero weights.
    strict : bool
        Raise when a layer's input size does not match the previous layer's nodes; otherwise start a
        new chain segment (its inputs become a new node layer ``<name>.in``).
    """
    if example_input is None and input_shape is not None:
        example_input = torch.zeros((1, *[int(s) for s in input_shape]))
    if example_input is not None:
        p = next(model.parameters(), None)
        if p is not None:
            example_input = example_input.to(device=p.device, dtype=p.dtype)
    layers = prunable_layers(model, example_input)
    if not layers:
        raise ValueError("model has no Linear or Conv2d layer")
    has_conv = any(isinstance(m, nn.Conv2d) for _, m in layers)
    if has_conv and example_input is None:
        raise ValueError("the model has Conv2d layers: pass input_shape=(C, H, W) so feature-map sizes are known")
    sizes = _output_sizes(model, layers, example_input) if has_conv else {}
    if pruned is None:
        pruned = [n for n, m in layers if get_mask(m) is not None]
        if not pruned:
            pruned = [n for n, _ in layers[:-1]] if len(layers) > 1 else [layers[0][0]]
    pruned_set = set(pruned)
    unknown = pruned_set - {n for n, _ in layers}
    if unknown:
        raise ValueError(f"pruned layers not in the model's Linear/Conv2d layers: {sorted(unknown)}")

    nodes: list[NodeLayer] = []
    conns: list[LayerConnections] = []
    notes: list[str] = []
    for name, m in layers:
        n_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        prev = nodes[-1].size if nodes else None
        chained = prev is not None and (
            prev == n_in or (isinstance(m, nn.Linear) and nodes[-1].kind == "conv" and n_in % prev == 0))
        if not chained:
            if prev is not None:
                msg = (f"layer {name} takes {n_in} inputs but the previous layer has {prev} nodes: "
                       "not a feed-forward chain")
                if strict:
                    raise ValueError(msg + " (use strict=False to start a new segment)")
                notes.append(msg + "; new segment started")
            nodes.append(NodeLayer("input" if not nodes else f"{name}.in", n_in, "input"))
        lower = len(nodes) - 1
        nz = layer_support(m, masks.get(name) if masks is not None else None)
        if isinstance(m, nn.Linear):
            counts = linear_counts(nz, nodes[lower].size)
            kind, uses, n_out = "linear", 1, m.out_features
        else:
            hw = sizes.get(id(m))
            if hw is None:
                raise ValueError(f"conv layer {name} was not called in the forward pass")
            counts = conv_counts(nz, hw, m.groups)
            kind, uses, n_out = "conv", int(np.prod(hw)), m.out_channels
        nodes.append(NodeLayer(name, n_out, kind))
        conns.append(LayerConnections(name, kind, counts, lower, lower + 1, name in pruned_set, uses))
    return SparseNetwork(nodes, conns, notes)


def network_from_weights(weights: Sequence, *, names: Sequence[str] | None = None,
                         pruned: Sequence[bool] | None = None,
                         out_sizes: Sequence[tuple[int, int] | None] | None = None) -> SparseNetwork:
    """Build a chain from weight arrays (Linear (out, in) or Conv (C_out, C_in, kh, kw)); zero = pruned.

    ``pruned`` flags per layer (default: all but the last); ``out_sizes`` the (H, W) of each conv output.
    """
    weights = [w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w) for w in weights]
    k = len(weights)
    names = list(names) if names is not None else [f"layer{i + 1}" for i in range(k)]
    pruned = list(pruned) if pruned is not None else [i < k - 1 or k == 1 for i in range(k)]
    nodes: list[NodeLayer] = []
    conns: list[LayerConnections] = []
    for i, w in enumerate(weights):
        nz = w != 0
        n_in = w.shape[1]
        if not nodes:
            nodes.append(NodeLayer("input", n_in, "input"))
        if w.ndim == 2:
            counts, kind, uses = linear_counts(nz, nodes[-1].size), "linear", 1
        elif w.ndim == 4:
            hw = (out_sizes or [None] * k)[i]
            if hw is None:
                raise ValueError(f"out_sizes needed for conv weight {names[i]}")
            counts, kind, uses = conv_counts(nz, hw), "conv", int(np.prod(hw))
        else:
            raise ValueError(f"weight {names[i]} must be 2-D or 4-D, got shape {w.shape}")
        lower = len(nodes) - 1
        nodes.append(NodeLayer(names[i], w.shape[0], kind))
        conns.append(LayerConnections(names[i], kind, counts, lower, lower + 1, bool(pruned[i]), uses))
    return SparseNetwork(nodes, conns)


def layer_degrees(model: nn.Module, **kwargs) -> list[LayerDegrees]:
    """Shortcut: ``network_from_model(model, **kwargs).degrees()``."""
    return network_from_model(model, **kwargs).degrees()
