"""Topology tracking: incremental degrees, Ω̂/Δ̂ against brute-force counts and the network package, k-shells
against networkx, the CNN (generic) path, gradient ratios."""
from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from ncap.models.sparse.regrow import update_layer
from ncap.models.sparse.topology import TopologyTracker, core_numbers_csr, gradient_ratio, layered_csr
from ncap.network import (
    core_numbers,
    get_mask,
    network_from_model,
    preferential_attachment,
    set_mask,
)


@pytest.mark.parametrize("seed", range(5))
def test_core_numbers_csr_matches_networkx(seed):
    g = nx.gnp_random_graph(80, 0.08 + 0.05 * seed, seed=seed)
    a = sp.csr_matrix(nx.to_scipy_sparse_array(g, nodelist=range(80), dtype=np.int64))
    core = nx.core_number(g)
    np.testing.assert_array_equal(core_numbers_csr(a.indptr, a.indices), [core[i] for i in range(80)])


@pytest.mark.parametrize("seed", range(4))
def test_layered_csr_is_the_adjacency_of_the_layered_graph(seed):
    rng = np.random.default_rng(seed)
    sizes = [9, 12, 7, 3]
    edges, rows, cols = [], [], []
    off = np.concatenate([[0], np.cumsum(sizes)])
    for j, (lo, up) in enumerate(itertools.pairwise(sizes)):
        u, v = np.nonzero(rng.random((up, lo)) < 0.3)
        edges.append((u, v))
        rows.append(u + off[j + 1])
        cols.append(v + off[j])
    indptr, indices = layered_csr(sizes, edges)
    r, c = np.concatenate(rows), np.concatenate(cols)
    adj = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(off[-1], off[-1]))
    adj = (adj + adj.T).tocsr()
    got = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=adj.shape)
    assert (got != adj).nnz == 0
    np.testing.assert_array_equal(core_numbers_csr(indptr, indices), core_numbers(adj))


def _mlp(seed=0, sizes=(7, 6, 5, 3), density=0.4):
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    for m in list(model)[:-1]:
        if isinstance(m, nn.Linear):
            set_mask(m, torch.rand(m.weight.shape) < density)
    return model


def _update_all(model, names, seed):
    """One gradient-rule update with random scores on every sparse layer (masks change in place)."""
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    return {n: update_layer(mods[n].weight, get_mask(mods[n]), 0.4, "gradient",
                            score=torch.randn(mods[n].weight.shape, generator=g)) for n in names}


def _brute_pa(model, masks_before, masks_after, sparse):
    """Ω̂ and Δ̂ correlations by explicit loops over nodes and node pairs (paper degree rule)."""
    lin = [m for m in model if isinstance(m, nn.Linear)]
    names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    flags = [n in sparse for n in names]
    sizes = [lin[0].in_features] + [m.out_features for m in lin]

    def support(k, masks):
        return masks.get(names[k], np.ones((sizes[k + 1], sizes[k]), bool))

    deg, gain, free = {}, {}, {}
    for j in range(len(sizes)):
        low, up = j >= 1 and flags[j - 1], j < len(lin) and flags[j]
        if not (low or up):
            continue
        d, gn, fr = np.zeros(sizes[j]), np.zeros(sizes[j]), np.zeros(sizes[j])
        for i in range(sizes[j]):
            if low:
                b, a = support(j - 1, masks_before)[i], support(j - 1, masks_after)[i]
                d[i] += b.sum()
                gn[i] += (a & ~b).sum()
                fr[i] += (~b).sum()
            if up:
                b, a = support(j, masks_before)[:, i], support(j, masks_after)[:, i]
                d[i] += b.sum()
                gn[i] += (a & ~b).sum()
                fr[i] += (~b).sum()
        deg[j], gain[j], free[j] = d, gn, fr
    out = {}
    for j, x in deg.items():
        vals = np.unique(x)
        om = {v: gain[j][x == v].mean() for v in vals}
        omf = {v: gain[j][x == v].sum() / free[j][x == v].sum() for v in vals if free[j][x == v].sum()}
        out[("omega", j)] = np.corrcoef(x, [om[v] for v in x])[0, 1]
        keep = [i for i, v in enumerate(x) if v in omf]
        out[("omega_free", j)] = np.corrcoef(x[keep], [omf[x[i]] for i in keep])[0, 1]
    for k, name in enumerate(names):
        if not flags[k]:
            continue
        b, a = support(k, masks_before), support(k, masks_after)
        d1, d2 = deg[k], deg[k + 1]
        cells, cellf = {}, {}
        for lo in range(sizes[k]):
            for up in range(sizes[k + 1]):
                key = (d1[lo], d2[up])
                new = int(a[up, lo] and not b[up, lo])
                cells.setdefault(key, []).append(new)
                if not b[up, lo]:
                    cellf.setdefault(key, []).append(new)
        x = [k1 * k2 for (k1, k2), v in cells.items() for _ in v]
        y = [np.mean(v) for v in cells.values() for _ in v]
        out[("delta", name)] = np.corrcoef(x, y)[0, 1]
        x = [k1 * k2 for (k1, k2), v in cellf.items() for _ in v]
        y = [np.mean(v) for v in cellf.values() for _ in v]
        out[("delta_free", name)] = np.corrcoef(x, y)[0, 1]
    return out


def _masks(model, names):
    mods = dict(model.named_modules())
    return {n: get_mask(mods[n]).numpy().copy() for n in names}


@pytest.mark.parametrize("seed", range(3))
def test_omega_delta_agree_with_brute_force_counts_and_the_network_package(seed):
    model = _mlp(seed, sizes=(9, 8, 7, 3), density=0.35)
    sparse = ["0", "2"]
    tracker = TopologyTracker(model, sparse)
    tracker.record(step=0, epoch=0)
    before = _masks(model, sparse)
    net0 = network_from_model(model, pruned=sparse, masks={k: torch.from_numpy(v) for k, v in before.items()})
    row = tracker.record(step=1, epoch=1, updates=_update_all(model, sparse, seed))
    after = _masks(model, sparse)
    net1 = network_from_model(model, pruned=sparse, masks={k: torch.from_numpy(v) for k, v in after.items()})
    brute = _brute_pa(model, before, after, sparse)
    node_names = {0: "input", 1: "0", 2: "2"}
    for j, name in node_names.items():
        assert row["nodes"][name]["omega_corr"] == pytest.approx(brute[("omega", j)], abs=1e-9)
        assert row["nodes"][name]["omega_corr_free"] == pytest.approx(brute[("omega_free", j)], abs=1e-9)
    for name in sparse:
        assert row["layers"][name]["delta_corr"] == pytest.approx(brute[("delta", name)], abs=1e-9)
        assert row["layers"][name]["delta_corr_free"] == pytest.approx(brute[("delta_free", name)], abs=1e-9)
    ref = preferential_attachment(net0, net1)
    for r in ref["omega"]:
        assert row["nodes"][r["layer"]]["omega_corr"] == pytest.approx(r["corr"], abs=1e-9)
        assert row["nodes"][r["layer"]]["omega_slope"] == pytest.approx(r["slope"], abs=1e-9)
    for r in ref["delta"]:
        assert row["layers"][r["upper"]]["delta_corr_free"] == pytest.approx(r["corr_d1d2_free"], abs=1e-9)


def test_incremental_tracking_equals_recounting_from_scratch():
    model = _mlp(1, sizes=(30, 25, 20, 4), density=0.2)
    sparse = ["0", "2"]
    fast = TopologyTracker(model, sparse)
    slow = TopologyTracker(model, sparse)
    slow.fast = False  # the generic path: network_from_model, kshell, preferential_attachment at every record
    grads = {n: torch.randn(m.weight.shape) for n, m in model.named_children() if n in sparse}
    rows_f, rows_s = [fast.record(step=0, epoch=0, grads=grads)], [slow.record(step=0, epoch=0, grads=grads)]
    for t in range(1, 5):
        upd = _update_all(model, sparse, t)
        rows_f.append(fast.record(step=t, epoch=t, updates=upd, grads=grads))
        rows_s.append(slow.record(step=t, epoch=t, updates=upd, grads=grads))
    for rf, rs in zip(rows_f, rows_s):
        assert rf["kshell"] == rs["kshell"]
        for name, node in rf["nodes"].items():
            for key, v in node.items():
                assert rs["nodes"][name][key] == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), key
        for name, layer in rf["layers"].items():
            for key, v in layer.items():
                assert rs["layers"][name][key] == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), key
    af, as_ = fast.arrays(), slow.arrays()
    assert af.keys() == as_.keys()
    for k in af:
        np.testing.assert_array_equal(af[k], as_[k])
    mods = dict(model.named_modules())
    np.testing.assert_array_equal(af["0/fan_in"][-1], get_mask(mods["0"]).sum(1).numpy())


def test_cnn_models_use_the_generic_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                          nn.ReLU(), nn.Linear(6, 3))
    for i in (0, 4):
        set_mask(model[i], torch.rand(model[i].weight.shape) < 0.5)
    tracker = TopologyTracker(model, ["0", "4"], input_shape=(1, 12, 12))
    assert not tracker.fast
    tracker.record(step=0, epoch=0)
    row = tracker.record(step=1, epoch=1, updates=_update_all(model, ["0", "4"], 0))
    assert row["layers"]["0"]["fan_in_cv"] >= 0 and "omega_corr" in row["nodes"]["0"]
    assert tracker.arrays()["0/fan_in"].shape == (2, 4)


def test_gradient_ratio_splits_neurons_by_fan_in():
    fan = np.array([10, 1, 8, 2])
    norm = np.array([4.0, 1.0, 2.0, 1.0])
    assert gradient_ratio(fan, norm) == pytest.approx(3.0)
    assert gradient_ratio(np.array([3]), np.array([1.0])) is None


def test_dormant_counts_and_relative_thresholds():
    model = _mlp(2, sizes=(20, 15, 10, 3), density=0.3)
    tracker = TopologyTracker(model, ["0", "2"], thresholds=(1, 5))
    row = tracker.record(step=0, epoch=0)
    for ld in tracker.final_degrees():
        d = ld.degree
        assert row["nodes"][ld.name]["dormant"] == {"1": int((d < 1).sum()), "5": int((d < 5).sum())}
        assert row["nodes"][ld.name]["dormant_rel"]["0.631"] == int((d < 110 / 174.45 * d.mean()).sum())
