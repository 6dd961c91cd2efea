"""Network-science measures of sparse networks: k-shells, dormant neurons, weight ESDs and preferential
attachment (:mod:`ncap.network.degree_report` gathers them into the ``ncap prune`` report).

* k-shell decomposition (sources/002, §4.5.1): repeatedly peel nodes of degree < k; a node's shell is the
  largest k whose k-core contains it. Run on the whole layered graph (input, hidden and the dense output
  layer, every layer's connections). Conv connections carry multiplicities (see
  :mod:`ncap.network.degrees`), so the peeling uses weighted degree (sum of multiplicities); on 0/1 graphs
  it equals ``networkx.core_number``.
* Dormant / isolated neurons (sources/002, §5.4): nodes whose degree (paper rule) is below a threshold;
  ``isolated`` = degree 0; for hidden layers also nodes cut off from below (no input connection) or above.
* ESD (sources/001): eigenvalues of X = WᵀW/N of each weight matrix (N = larger side, M = smaller side:
  the squared singular values / N), with a continuous power-law fit of the tail (Clauset MLE, x_min by KS).
  Conv weights (C_out, C_in, kh, kw) are reshaped to (C_out, C_in·kh·kw).
* Internal preferential attachment (sources/000, §4.2): between two snapshots t and t+1 of the same
  architecture, Δ̂(d1, d2) = new connections between node pairs (one in layer l with degree d1 at t,
  one in layer l+1 with degree d2 at t) / number of such pairs; Ω̂(d) = new connections made by all
  degree-d nodes of a layer / number of degree-d nodes. Degrees follow the paper rule (pruned sides).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ncap.network.degrees import LayerConnections, LayerDegrees, SparseNetwork
from ncap.network.masks import prunable_layers
from ncap.network.powerlaw import fit_power_law

__all__ = [
    "core_numbers",
    "dormant_neurons",
    "esd",
    "esd_report",
    "kshell",
    "preferential_attachment",
]


# ------------------------------------------------------------------------------------------- k-shell


def core_numbers(adj) -> np.ndarray:
    """Core number of every node of an undirected graph given as a symmetric (sparse) adjacency matrix.

    Entries are edge multiplicities (≥ 0); the diagonal is ignored. Level-synchronous peeling: at level
    k, nodes whose remaining (weighted) degree is ≤ k are removed together until none is left, and get
    core number k; k then jumps to the smallest remaining degree. Equal to ``networkx.core_number`` on
    simple graphs.
    """
    import scipy.sparse as sp

    a = sp.coo_matrix(adj)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got {a.shape}")
    off = a.row != a.col
    a = sp.csr_matrix((a.data[off].astype(np.int64), (a.row[off], a.col[off])), shape=a.shape)
    a.eliminate_zeros()
    n = a.shape[0]
    deg = np.asarray(a.sum(1)).ravel().astype(np.int64)
    alive = np.ones(n, bool)
    core = np.zeros(n, np.int64)
    k = 0
    while alive.any():
        k = max(k, int(deg[alive].min()))
        while True:
            rem = alive & (deg <= k)
            if not rem.any():
                break
            core[rem] = k
            alive[rem] = False
            deg -= np.asarray(a @ rem.astype(np.int64), dtype=np.int64).ravel()
    return core


def kshell(net: SparseNetwork, *, weighted: bool = True) -> dict:
    """k-shell decomposition of the layered graph ``net``.

    Returns ``{"core": array per node layer (list), "k_min", "k_max", "core_size" (nodes in the k_max
    shell), "layers": [{layer, k_min, k_max, k_mean, in_core (nodes of this layer in the k_max shell),
    shells: {k: count}}]}``. ``weighted=False`` ignores conv multiplicities (0/1 edges).
    """
    core = core_numbers(net.adjacency(weighted=weighted))
    off = net.offsets()
    k_max = int(core.max()) if core.size else 0
    layers = []
    per = []
    for i, nl in enumerate(net.nodes):
        c = core[off[i]:off[i + 1]]
        per.append(c)
        vals, cnt = np.unique(c, return_counts=True)
        layers.append({
            "layer": nl.name,
            "k_min": int(c.min()) if c.size else 0,
            "k_max": int(c.max()) if c.size else 0,
            "k_mean": float(c.mean()) if c.size else 0.0,
            "in_core": int((c == k_max).sum()),
            "shells": {int(v): int(n) for v, n in zip(vals, cnt)},
        })
    return {
        "core": per,
        "k_min": int(core.min()) if core.size else 0,
        "k_max": k_max,
        "core_size": int((core == k_max).sum()),
        "weighted": bool(weighted),
        "layers": layers,
    }


# ------------------------------------------------------------------------------------------- dormant


def dormant_neurons(degrees: Sequence[LayerDegrees], thresholds: Sequence[int] = (1, 10)) -> list[dict]:
    """Per node layer: nodes with degree < each threshold, isolated (degree 0), cut off below / above.

    ``no_input`` counts nodes with a lower layer but no connection from it; ``no_output`` nodes with an
    upper layer but no connection to it (the raw in/out degrees, whether that side is pruned or not).
    """
    out = []
    for ld in degrees:
        d = ld.degree
        row = {
            "layer": ld.name,
            "nodes": ld.size,
            "isolated": int((d == 0).sum()),
            "dormant": {str(int(t)): int((d < t).sum()) for t in thresholds},
        }
        if ld.kind != "input":
            row["no_input"] = int((ld.in_degree == 0).sum())
        if ld.counts_upper or ld.out_degree.any():
            row["no_output"] = int((ld.out_degree == 0).sum())
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------- ESD


def esd(weight) -> np.ndarray:
    """Eigenvalues of X = WᵀW / N, N = max(W.shape) (the M = min(W.shape) nonzero-able ones, ascending).

    Conv weights are reshaped to (C_out, C_in·kh·kw).
    """
    w = weight.detach().cpu().double() if isinstance(weight, torch.Tensor) else torch.as_tensor(np.asarray(weight),
                                                                                                   dtype=torch.float64)
    if w.ndim > 2:
        w = w.reshape(w.shape[0], -1)
    if w.ndim != 2:
        raise ValueError(f"weight must be at least 2-D, got shape {tuple(w.shape)}")
    n = max(w.shape)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # M×M; same nonzero spectrum as WᵀW
    ev = np.linalg.eigvalsh(gram.numpy()) / n
    return np.sort(np.clip(ev, 0.0, None))


def esd_report(model: nn.Module, *, layers: Sequence[str] | None = None, min_eigs: int = 10,
               tol: float = 1e-12) -> list[dict]:
    """Per Linear/Conv2d layer: ESD size, λ_max, and the continuous power-law fit of the ESD tail.

    Eigenvalues ≤ ``tol``·λ_max are dropped before fitting (rank deficiency from pruning). Layers with
    fewer than ``min_eigs`` usable eigenvalues get ``alpha: None`` and a ``reason``.
    """
    out = []
    for name, m in prunable_layers(model):
        if layers is not None and name not in layers:
            continue
        ev = esd(m.weight)
        row: dict = {"layer": name, "shape": list(m.weight.shape), "n_eigs": int(ev.size),
                     "lambda_max": float(ev[-1]) if ev.size else 0.0}
        pos = ev[ev > tol * max(float(ev[-1]) if ev.size else 0.0, 1e-300)]
        row["n_positive"] = int(pos.size)
        if pos.size < min_eigs or np.unique(pos).size < 3:
            row.update(alpha=None, reason=f"{pos.size} positive eigenvalues (< {min_eigs})")
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    fit = fit_power_law(pos, discrete=False)
                row.update(alpha=fit.alpha, alpha_se=fit.alpha_se, xmin=fit.xmin, n_tail=fit.n_tail, ks=fit.ks,
                           at_bound=fit.at_bound)
            except ValueError as exc:
                row.update(alpha=None, reason=str(exc))
        out.append(row)
    return out


# ---------------------------------------------------------------------------- preferential attachment


def _bin_index(d: np.ndarray, bins: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Group degrees: exact values (``bins=None``) or ``bins`` log-spaced bins; returns (index, label)."""
    if bins is None:
        vals, idx = np.unique(d, return_inverse=True)
        return idx, vals.astype(float)
    top = max(int(d.max()), 1)
    edges = np.unique(np.concatenate([[0], np.round(np.geomspace(1, top + 1, int(bins) + 1))]))
    idx = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    used, inv = np.unique(idx, return_inverse=True)
    labels = np.array([d[idx == u].mean() for u in used])  # mean degree of the nodes in each bin
    return inv, labels


def _corr(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float | None:
    """Pearson correlation, weighted by ``w`` (e.g. node or pair counts) when given."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    if x.size < 3 or w.sum() <= 0:
        return None
    mx, my = np.average(x, weights=w), np.average(y, weights=w)
    vx, vy = np.average((x - mx) ** 2, weights=w), np.average((y - my) ** 2, weights=w)
    if vx <= 0 or vy <= 0:
        return None
    return float(np.average((x - mx) * (y - my), weights=w) / np.sqrt(vx * vy))


def _is_binary(lc: LayerConnections) -> bool:
    """A Linear layer with 0/1 connections, where "free slots" (unconnected partners) are defined."""
    return lc.kind == "linear" and lc.counts.max(initial=0) <= 1


def _one_hot(idx: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indicator matrix of the groups ``idx`` (n,)."""
    g = np.zeros((idx.size, k))
    g[np.arange(idx.size), idx] = 1.0
    return g


def _counted_sides(ld: LayerDegrees, lower_side, upper_side) -> np.ndarray:
    """Per node of ``ld``: the sum of the per-side counts on the sides that count for its degree."""
    total = (lower_side if ld.counts_lower else 0) + (upper_side if ld.counts_upper else 0)
    return np.asarray(total, np.int64) * np.ones(ld.size, np.int64)


def _delta_row(lc: LayerConnections, nw: np.ndarray, lower: LayerDegrees, upper: LayerDegrees,
               bins: int | None) -> dict:
    """Δ̂(d1, d2) of one pruned layer ``lc`` from its new connections ``nw`` (upper, lower)."""
    i1, lab1 = _bin_index(lower.degree, bins)
    i2, lab2 = _bin_index(upper.degree, bins)
    n1 = np.bincount(i1, minlength=lab1.size)
    n2 = np.bincount(i2, minlength=lab2.size)
    # sum of new connections per (d1 group, d2 group)
    g1, g2 = _one_hot(i1, lab1.size), _one_hot(i2, lab2.size)
    m = g1.T @ (nw.T.astype(float) @ g2)
    npairs = np.outer(n1, n2).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = m / npairs
    ok = npairs > 0
    prod = np.outer(lab1, lab2)
    row = {
        "lower": lower.name, "upper": upper.name, "d1": lab1.tolist(), "d2": lab2.tolist(),
        "delta": [[float(v) if k else None for v, k in zip(r, okr)] for r, okr in zip(delta, ok)],
        "pairs": npairs.astype(np.int64).tolist(),
        "new_connections": int(nw.sum()),
        "corr_d1d2": _corr(prod[ok], delta[ok], npairs[ok]),
        "corr_d1d2_free": None,
    }
    if _is_binary(lc):
        # the same, per pair still unconnected at t (high-degree nodes have fewer free partners)
        nfree = npairs - g1.T @ ((lc.counts > 0).T.astype(float) @ g2)
        okf = nfree > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            dfree = m / nfree
        row["corr_d1d2_free"] = _corr(prod[okf], dfree[okf], nfree[okf])
    return row


def _omega_row(ld: LayerDegrees, gained: np.ndarray, slots: np.ndarray | None, bins: int | None) -> dict:
    """Ω̂(d) of one node layer from the new connections ``gained`` per node (and free ``slots``, or None)."""
    idx, lab = _bin_index(ld.degree, bins)
    cnt = np.bincount(idx, minlength=lab.size)
    om = np.bincount(idx, weights=gained, minlength=lab.size) / np.maximum(cnt, 1)
    denom = float((cnt * lab * lab).sum())
    slope = float((cnt * lab * om).sum() / denom) if denom > 0 else None
    affine = None
    if lab.size >= 2 and np.ptp(lab) > 0:
        b, a0 = np.polyfit(lab, om, 1, w=np.sqrt(cnt))
        affine = {"slope": float(b), "intercept": float(a0)}
    row = {"layer": ld.name, "d": lab.tolist(), "omega": om.tolist(), "nodes": cnt.tolist(),
           "new_connections": int(gained.sum()), "slope": slope, "affine": affine,
           "corr": _corr(lab, om, cnt), "omega_free": None, "corr_free": None}
    if slots is not None:
        fs = np.bincount(idx, weights=slots, minlength=lab.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            omf = np.where(fs > 0, np.bincount(idx, weights=gained, minlength=lab.size) / fs, np.nan)
        okf = np.isfinite(omf)
        row["omega_free"] = [float(v) if f else None for v, f in zip(omf, okf)]
        row["corr_free"] = _corr(lab[okf], omf[okf], cnt[okf])
    return row


def preferential_attachment(before: SparseNetwork, after: SparseNetwork, *, bins: int | None = None) -> dict:
    """Empirical internal preferential attachment between snapshots t (``before``) and t+1 (``after``).

    New connections are the positive part of (counts at t+1 − counts at t), per layer. Degrees d are
    the paper-rule degrees at t. For every pruned layer (lower l → upper l+1):
    ``delta[a][b]`` = Δ̂(d1_a, d2_b) = new connections between the lower nodes with degree d1_a and upper
    nodes with degree d2_b, divided by the number of such pairs (None where no pair exists). With
    ``bins`` degrees are grouped in log-spaced bins (labels = mean degree in the bin). ``corr_d1d2`` is
    the Pearson correlation of Δ̂ with d1·d2 over non-empty cells, weighted by their pair counts (eq. 6
    predicts Δ̂ ∝ d1·d2).

    For every reported node layer: ``omega`` = Ω̂(d) = new connections of all degree-d nodes (on the
    sides that count for the degree) / number of degree-d nodes, with the least-squares line through
    the origin ``slope`` (eq. 10: Ω̂(d) = d · (N^l a^l + N^{l-1} a^{l-1}) / Σ d_s), an ``affine``
    least-squares line ``{slope, intercept}`` and the Pearson ``corr`` of Ω̂ with d (both weighted by
    node counts).

    A node of degree d has fewer unconnected partners left, which by itself makes the counts fall with
    d. For Linear layers (0/1 connections) the output also has per-free-slot versions: ``omega_free``
    (new connections per partner still unconnected at t) with ``corr_free``, and ``corr_d1d2_free``
    (Δ̂ per unconnected pair). Conv layers get None.
    """
    if [n.size for n in before.nodes] != [n.size for n in after.nodes] or len(before.layers) != len(after.layers):
        raise ValueError("the two snapshots must have the same architecture")
    deg0 = {ld.name: ld for ld in before.degrees()}
    names = [nl.name for nl in before.nodes]
    new = [np.clip(a.counts.astype(np.int64) - b.counts.astype(np.int64), 0, None)
           for a, b in zip(after.layers, before.layers)]
    pairs_out = []
    new_in = {n: np.zeros(s.size, np.int64) for n, s in zip(names, before.nodes)}
    new_out = {n: np.zeros(s.size, np.int64) for n, s in zip(names, before.nodes)}
    # free slots (unconnected partners at t), defined for 0/1 (Linear) connections only
    free_in = {n: np.zeros(s.size, np.int64) for n, s in zip(names, before.nodes)}
    free_out = {n: np.zeros(s.size, np.int64) for n, s in zip(names, before.nodes)}
    slots_ok = {n: True for n in names}
    for lc, nw in zip(before.layers, new):
        lo, up = names[lc.lower], names[lc.upper]
        new_in[up] += nw.sum(1)
        new_out[lo] += nw.sum(0)
        if _is_binary(lc):
            conn = lc.counts > 0
            free_in[up] += conn.shape[1] - conn.sum(1)
            free_out[lo] += conn.shape[0] - conn.sum(0)
        else:
            slots_ok[lo] = slots_ok[up] = False
        if lc.pruned:
            pairs_out.append(_delta_row(lc, nw, deg0[lo], deg0[up], bins))
    omega_out = [_omega_row(ld, _counted_sides(ld, new_in[name], new_out[name]),
                            _counted_sides(ld, free_in[name], free_out[name]) if slots_ok[name] else None, bins)
                 for name, ld in deg0.items()]
    return {"delta": pairs_out, "omega": omega_out}
