"""Topology of a sparse network over dynamic sparse training, recorded at every topology update.

Per node layer (the layered graph and degree rule of :mod:`ncap.network.degrees`: a degree
counts connections through sparse layers only): in / out / total degrees, degree CV and maximum, dormant
neurons below the thresholds of sources/002 §5.4 (degree < 10 and < 110; < 1 = isolated) and below the same
thresholds relative to the layer's initial mean degree (:data:`RELATIVE_DORMANT`), k-shell range,
and Ω̂(d) between consecutive updates. Per sparse layer: fan-in CV, Δ̂(d1, d2) between consecutive
updates, per-neuron gradient norms (L2 norm of the gradient over the neuron's active incoming weights)
and the gradient ratio of sources/003 §2.9 (mean norm of the half of the neurons with the largest fan-in
over that of the other half). Ω̂ and Δ̂ are those of :func:`ncap.network.preferential_attachment`
(new connections at update t grouped by degree at t−1, also per free slot).

Two ways to compute them, with the same output:

* MLPs (a chain of Linear layers), incrementally: degrees are updated from the pruned / regrown indices of
  the update, Ω̂/Δ̂ come from the regrown edges alone, and k-shells from :func:`core_numbers_csr`. The
  generic way costs ~0.35 s per update on a 784-1024-1024-10 MLP (mostly dense Δ̂ matmuls), a third of an
  epoch; this one ~10-40 ms, most of it the exact k-shell peeling (bench/results/sparse_lab/speed.md).
* Anything else (CNNs): :func:`ncap.network.network_from_model` on the masks at every update,
  with :func:`~ncap.network.kshell` and :func:`~ncap.network.preferential_attachment`.

Storage is compact: a JSON-ready row of scalars per update (:attr:`TopologyTracker.rows`) and int32
degree / float32 gradient-norm arrays per update (:meth:`TopologyTracker.arrays`, saved as ``.npz``).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ncap.models.sparse.regrow import LayerUpdate
from ncap.network import (
    LayerDegrees,
    degree_fit,
    dormant_neurons,
    get_mask,
    kshell,
    network_from_model,
    preferential_attachment,
    prunable_layers,
)

__all__ = ["DORMANT_THRESHOLDS", "RELATIVE_DORMANT", "TopologyTracker", "core_numbers_csr", "gradient_ratio", "layered_csr", "weighted_corr"]

DORMANT_THRESHOLDS = (1, 10, 110)
# The same thresholds relative to a layer's initial mean degree: sources/002's MLP (3072-1024-512-10, ERK at
# 95 %) starts its first hidden layer at mean degree 174.45 (layer_densities gives 129 918 + 48 719 weights
# around 1 024 neurons), so 10 and 110 are 5.7 % and 63 % of it. Smaller CPU-scale MLPs need these.
RELATIVE_DORMANT = (10 / 174.45, 110 / 174.45)


def weighted_corr(x, y, w=None) -> float | None:
    """Pearson correlation of x and y weighted by w; None with < 3 points or no variance."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    if x.size < 3 or w.sum() <= 0:
        return None
    dx, dy = x - np.average(x, weights=w), y - np.average(y, weights=w)
    vx, vy = float((w * dx * dx).sum()), float((w * dy * dy).sum())  # no BLAS: threads cost more than they save here
    return float((w * dx * dy).sum() / np.sqrt(vx * vy)) if vx > 0 and vy > 0 else None


def core_numbers_csr(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Core numbers of a simple undirected graph given by CSR neighbour lists (each edge in both lists).

    The level-synchronous peeling of :func:`ncap.network.core_numbers`, but each round only
    visits the edges of the nodes removed in it (total work O(edges) instead of one sparse matvec per
    round); the tests check it against that function and networkx.
    """
    lens0 = np.diff(indptr)
    deg = lens0.astype(np.int64)
    n = deg.size
    big = np.iinfo(np.int64).max
    core = np.zeros(n, np.int64)
    k, left = 0, n
    while left:
        k = max(k, int(deg.min()))  # removed nodes carry degree `big`
        rem = np.flatnonzero(deg <= k)
        while rem.size:
            core[rem] = k
            deg[rem] = big
            left -= rem.size
            lens = lens0[rem]
            pos = np.repeat(indptr[rem] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
            deg -= np.bincount(indices[pos], minlength=n)
            rem = np.flatnonzero(deg <= k)
    return core


def layered_csr(sizes: Sequence[int], edges: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR neighbour lists ``(indptr, indices)`` of a layered graph, nodes numbered layer by layer.

    ``edges[l] = (upper, lower)``: the connections between node layer l and l + 1 as local indices, sorted
    by ``upper`` (row-major flat order). Each node lists its lower neighbours, then its upper ones; built
    by placement (no global sort) because it runs at every topology update.
    """
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    down = np.zeros(off[-1], np.int64)
    up = np.zeros(off[-1], np.int64)
    for j, (u, lo) in enumerate(edges):
        down[off[j + 1]:off[j + 2]] = np.bincount(u, minlength=sizes[j + 1])
        up[off[j]:off[j + 1]] = np.bincount(lo, minlength=sizes[j])
    indptr = np.concatenate([[0], np.cumsum(down + up)])
    indices = np.empty(indptr[-1], np.int64)
    for j, (u, lo) in enumerate(edges):
        e = np.arange(u.size)
        first = np.concatenate([[0], np.cumsum(down[off[j + 1]:off[j + 2]])])  # row starts in the edge list
        indices[indptr[u + off[j + 1]] + e - first[u]] = lo + off[j]
        order = np.argsort(lo.astype(np.int16) if sizes[j] < 32768 else lo, kind="stable")  # int16: radix sort
        ls, us = lo[order], u[order]
        first = np.concatenate([[0], np.cumsum(up[off[j]:off[j + 1]])])
        g = ls + off[j]
        indices[indptr[g] + down[g] + e - first[ls]] = us + off[j + 1]
    return indptr, indices


def gradient_ratio(fan_in: np.ndarray, grad_norm: np.ndarray) -> float | None:
    """Mean gradient norm of the half of the neurons with the largest fan-in over the other half's.

    Neurons are ranked by fan-in (stable, descending); the top ``n // 2`` are the hubs (sources/003 §2.9).
    """
    order = np.argsort(-np.asarray(fan_in), kind="stable")
    half = order.size // 2
    if half == 0:
        return None
    low = float(np.mean(grad_norm[order[half:]]))
    return float(np.mean(grad_norm[order[:half]]) / low) if low > 0 else None


def _groups(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab, idx, cnt = np.unique(d, return_inverse=True, return_counts=True)
    return lab.astype(float), idx, cnt


def _omega(d: np.ndarray, gained: np.ndarray, free: np.ndarray | None) -> dict:
    """Ω̂(d) summary (as :func:`preferential_attachment`'s omega rows) from per-node gains and free slots."""
    lab, idx, cnt = _groups(d)
    om = np.bincount(idx, weights=gained, minlength=lab.size) / cnt
    denom = float((cnt * lab * lab).sum())
    out = {"omega_corr": weighted_corr(lab, om, cnt), "omega_slope": float((cnt * lab * om).sum() / denom) if denom else None,
           "omega_corr_free": None}
    if free is not None:
        fs = np.bincount(idx, weights=free, minlength=lab.size)
        ok = fs > 0
        omf = np.bincount(idx, weights=gained, minlength=lab.size)[ok] / fs[ok]
        out["omega_corr_free"] = weighted_corr(lab[ok], omf, cnt[ok])
    return out


def _delta(d_lo: np.ndarray, d_up: np.ndarray, grown: tuple, before: tuple | None) -> dict:
    """Δ̂(d1, d2) summary from the regrown edges ``(upper, lower)`` and the edges at t ``before``."""
    lab1, i1, n1 = _groups(d_lo)
    lab2, i2, n2 = _groups(d_up)
    k2 = lab2.size
    m = np.bincount(i1[grown[1]] * k2 + i2[grown[0]], minlength=lab1.size * k2).reshape(lab1.size, k2)
    pairs = np.outer(n1, n2).astype(float)
    prod = np.outer(lab1, lab2)
    out = {"delta_corr": weighted_corr(prod.ravel(), (m / pairs).ravel(), pairs.ravel()), "delta_corr_free": None}
    if before is not None:
        conn = np.bincount(i1[before[1]] * k2 + i2[before[0]], minlength=lab1.size * k2).reshape(m.shape)
        free = pairs - conn
        ok = free > 0
        out["delta_corr_free"] = weighted_corr(prod[ok], m[ok] / free[ok], free[ok])
    return out


class TopologyTracker:
    """Records the topology of ``model``'s sparse layers (keep-masks) at every call of :meth:`record`.

    Parameters
    ----------
    model : nn.Module
    sparse : names of the layers with keep-masks (the others are dense and count as in ``degrees``)
    input_shape : one input's shape; needed for CNNs (feature-map sizes)
    thresholds : dormant-neuron degree thresholds
    """

    def __init__(self, model: nn.Module, sparse: Sequence[str], *, input_shape: Sequence[int] | None = None,
                 thresholds: Sequence[int] = DORMANT_THRESHOLDS, with_kshell: bool = True):
        example = None if input_shape is None else torch.zeros((1, *input_shape))
        self.model, self.input_shape = model, input_shape
        self.layers = prunable_layers(model, example)
        self.sparse = [n for n, _ in self.layers if n in set(sparse)]
        self.thresholds, self.with_kshell = tuple(int(t) for t in thresholds), with_kshell
        mods = [m for _, m in self.layers]
        self.fast = all(isinstance(m, nn.Linear) for m in mods) and all(
            a.out_features == b.in_features for a, b in itertools.pairwise(mods))
        self.rows: list[dict] = []
        self._arrays: dict[str, list] = {}
        self._prev_net = None
        if self.fast:
            self._init_chain()

    # ------------------------------------------------------------------ fast path (Linear chains)
    def _support(self, module: nn.Module) -> np.ndarray:
        mask = get_mask(module)
        w = module.weight.detach()
        return (mask if mask is not None else w != 0).cpu().numpy().astype(bool)

    def _init_chain(self) -> None:
        mods = [m for _, m in self.layers]
        self.node_names = ["input"] + [n for n, _ in self.layers]
        self.node_sizes = [mods[0].in_features] + [m.out_features for m in mods]
        flags = [n in self.sparse for n, _ in self.layers]
        k = len(mods)
        self.lower_counts = [j >= 1 and flags[j - 1] for j in range(k + 1)]
        self.upper_counts = [j < k and flags[j] for j in range(k + 1)]
        self.in_deg = [np.zeros(self.node_sizes[0], np.int64)]
        self.out_deg = []
        for m in mods:
            s = self._support(m)
            self.in_deg.append(s.sum(1).astype(np.int64))
            self.out_deg.append(s.sum(0).astype(np.int64))
        self.out_deg.append(np.zeros(self.node_sizes[-1], np.int64))
        self.offsets = np.concatenate([[0], np.cumsum(self.node_sizes)])
        self._dense_edges = {j: np.nonzero(self._support(m)) for j, (n, m) in enumerate(self.layers) if not flags[j]}

    def _degrees_chain(self) -> list[LayerDegrees]:
        return [LayerDegrees(self.node_names[j], "input" if j == 0 else "linear", self.in_deg[j], self.out_deg[j],
                             self.lower_counts[j], self.upper_counts[j])
                for j in range(len(self.node_sizes)) if self.lower_counts[j] or self.upper_counts[j]]

    def _edges(self, j: int, name: str, module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        if j in self._dense_edges:
            return self._dense_edges[j]
        return np.divmod(self._flat[name], module.in_features)

    def _kshell_chain(self) -> dict:
        indptr, indices = layered_csr(self.node_sizes, [self._edges(j, n, m) for j, (n, m) in enumerate(self.layers)])
        core = core_numbers_csr(indptr, indices)
        per = {self.node_names[j]: core[self.offsets[j]:self.offsets[j + 1]] for j in range(len(self.node_sizes))}
        return {"k_min": int(core.min()), "k_max": int(core.max()), "core_size": int((core == core.max()).sum()),
                "per_layer": per}

    def _apply_updates(self, updates: dict[str, LayerUpdate]) -> tuple[dict, dict]:
        """Move the degrees to the new masks; return the Ω̂ rows per node layer and Δ̂ rows per layer."""
        degs0 = {ld.name: ld for ld in self._degrees_chain()}
        free = {}
        for name, ld in degs0.items():  # unconnected partners at t on the sides that count
            j = self.node_names.index(name)
            free[name] = np.zeros(ld.size, np.int64)
            if ld.counts_lower:
                free[name] += self.node_sizes[j - 1] - ld.in_degree
            if ld.counts_upper:
                free[name] += self.node_sizes[j + 1] - ld.out_degree
        d0 = {name: ld.degree for name, ld in degs0.items()}
        new_in = [np.zeros(s, np.int64) for s in self.node_sizes]
        new_out = [np.zeros(s, np.int64) for s in self.node_sizes]
        delta = {}
        for j, (name, m) in enumerate(self.layers):
            upd = updates.get(name)
            if upd is None:
                continue
            gu, gl = np.divmod(upd.grown, m.in_features)
            pu, pl = np.divmod(upd.pruned, m.in_features)
            before = None if upd.active is None else np.divmod(upd.active, m.in_features)
            delta[name] = _delta(d0[self.node_names[j]], d0[name], (gu, gl), before)
            delta[name]["new"] = int(upd.grown.size)
            new_in[j + 1] += np.bincount(gu, minlength=self.node_sizes[j + 1])
            new_out[j] += np.bincount(gl, minlength=self.node_sizes[j])
            self.in_deg[j + 1] += np.bincount(gu, minlength=self.node_sizes[j + 1]) - np.bincount(
                pu, minlength=self.node_sizes[j + 1])
            self.out_deg[j] += np.bincount(gl, minlength=self.node_sizes[j]) - np.bincount(
                pl, minlength=self.node_sizes[j])
        omega = {}
        for name, ld in degs0.items():
            j = self.node_names.index(name)
            gained = new_in[j] * ld.counts_lower + new_out[j] * ld.counts_upper
            omega[name] = _omega(d0[name], gained, free[name])
        return omega, delta

    # ------------------------------------------------------------------ generic path (any model)
    def _network(self):
        masks = {n: get_mask(m) for n, m in self.layers if n in self.sparse}
        return network_from_model(self.model, input_shape=self.input_shape, pruned=self.sparse, masks=masks,
                                  strict=False)

    def _generic(self, pa: bool) -> tuple[list[LayerDegrees], dict | None, dict, dict]:
        net = self._network()
        omega, delta = {}, {}
        if pa and self._prev_net is not None:
            res = preferential_attachment(self._prev_net, net)
            for row in res["omega"]:
                omega[row["layer"]] = {"omega_corr": row["corr"], "omega_slope": row["slope"],
                                       "omega_corr_free": row["corr_free"]}
            for row in res["delta"]:
                delta[row["upper"]] = {"delta_corr": row["corr_d1d2"], "delta_corr_free": row["corr_d1d2_free"],
                                       "new": row["new_connections"]}
        self._prev_net = net
        ks = None
        if self.with_kshell:
            k = kshell(net)
            ks = {"k_min": k["k_min"], "k_max": k["k_max"], "core_size": k["core_size"],
                  "per_layer": {nl.name: c for nl, c in zip(net.nodes, k["core"])}}
        return net.degrees(), ks, omega, delta

    # ------------------------------------------------------------------ recording
    def record(self, *, step: int, epoch: float, updates: dict[str, LayerUpdate] | None = None,
               grads: dict[str, torch.Tensor] | None = None, prune_fraction: float = 0.0) -> dict:
        """Record the current masks (after the update ``updates``, or the initial state when None).

        ``grads``: the gradient of each sparse layer's weight (e.g. the last batch's), for the gradient
        norms. Returns the row appended to :attr:`rows`.
        """
        if self.fast:
            self._flat = {n: (updates[n].after if updates and n in updates and updates[n].after is not None
                              else np.flatnonzero(get_mask(m).cpu().numpy())) for n, m in self.layers if n in self.sparse}
            omega, delta = self._apply_updates(updates) if updates is not None else ({}, {})
            degs = self._degrees_chain()
            ks = self._kshell_chain() if self.with_kshell else None
        else:
            degs, ks, omega, delta = self._generic(updates is not None)
        dormant = {r["layer"]: r for r in dormant_neurons(degs, self.thresholds)}
        if not self.rows:  # relative thresholds from the initial mean degree of each node layer
            self._rel = {ld.name: [f * float(ld.degree.mean()) for f in RELATIVE_DORMANT] for ld in degs}
        row = {"update": len(self.rows), "step": int(step), "epoch": float(epoch),
               "prune_fraction": float(prune_fraction), "nodes": {}, "layers": {}}
        for ld in degs:
            d = ld.degree
            node = {"degree_mean": float(d.mean()), "degree_cv": float(d.std() / d.mean()) if d.mean() > 0 else 0.0,
                    "degree_max": int(d.max()), "isolated": dormant[ld.name]["isolated"],
                    "dormant": dormant[ld.name]["dormant"],
                    "dormant_rel": {f"{f:.3f}": int((d < t).sum()) for f, t in zip(RELATIVE_DORMANT, self._rel[ld.name])}}
            if ks is not None:
                c = ks["per_layer"][ld.name]
                node["kshell"] = [int(c.min()), int(c.max())]
            node.update(omega.get(ld.name, {}))
            row["nodes"][ld.name] = node
            self._push(f"{ld.name}/in", ld.in_degree.astype(np.int32))
            self._push(f"{ld.name}/out", ld.out_degree.astype(np.int32))
            self._push(f"{ld.name}/degree", d.astype(np.int32))
        for name, m in self.layers:
            if name in self.sparse:
                row["layers"][name] = self._layer_row(name, m, grads, delta.get(name, {}))
        if ks is not None:
            row["kshell"] = {k: ks[k] for k in ("k_min", "k_max", "core_size")}
        self._push("step", np.int64(step))
        self._push("epoch", np.float32(epoch))
        self.rows.append(row)
        return row

    def _layer_row(self, name: str, module: nn.Module, grads: dict | None, delta: dict) -> dict:
        n_out = module.weight.shape[0]
        if self.fast:  # active weights as (row, column) from the cached flat indices
            rows, flat = self._flat[name] // module.in_features, self._flat[name]
            fan_in = self.in_deg[self.node_names.index(name)]
        else:
            flat = np.flatnonzero(get_mask(module).cpu().numpy())
            rows = flat // (module.weight.numel() // n_out)
            fan_in = np.bincount(rows, minlength=n_out)
        cv = float(fan_in.std() / fan_in.mean()) if fan_in.mean() > 0 else 0.0
        out = {"fan_in_cv": cv, "fan_in_max": int(fan_in.max()), "grad_ratio": None, **delta}
        norm = np.full(n_out, np.nan, np.float32)
        g = None if grads is None else grads.get(name)
        if g is not None:
            gv = g.detach().reshape(-1).cpu().numpy()[flat].astype(np.float64)
            norm = np.sqrt(np.bincount(rows, weights=gv * gv, minlength=n_out)).astype(np.float32)
            out["grad_ratio"] = gradient_ratio(fan_in, norm)
        self._push(f"{name}/fan_in", np.asarray(fan_in, np.int32))
        self._push(f"{name}/grad_norm", norm)
        return out

    def _push(self, key: str, value) -> None:
        self._arrays.setdefault(key, []).append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        """Stacked per-update arrays: ``<node layer>/in|out|degree`` and ``<sparse layer>/fan_in`` (int32, updates ×
        nodes), ``<sparse layer>/grad_norm`` (float32, NaN without a gradient), ``step``, ``epoch``."""
        return {k: np.stack(v) for k, v in self._arrays.items()}

    def save(self, path) -> None:
        """Write :meth:`arrays` as a compressed ``.npz``."""
        np.savez_compressed(path, **self.arrays())

    def final_degrees(self) -> list[LayerDegrees]:
        """Degrees of the last recorded state."""
        if self.fast:
            return self._degrees_chain()
        return self._network().degrees()

    def fits(self, *, n_bootstrap: int = 0, seed: int = 0) -> tuple[list[LayerDegrees], list[dict]]:
        """Power-law and truncated power-law fits (:func:`ncap.network.degree_fit`) of the final
        total degrees of every node layer; returns the degrees and the fits (with their fit objects)."""
        degs = self.final_degrees()
        return degs, [degree_fit(ld.degree, n_bootstrap=n_bootstrap, seed=seed) for ld in degs]
