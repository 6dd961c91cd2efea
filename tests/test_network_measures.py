"""k-shells (vs networkx), dormant neurons, ESD, preferential attachment and the pruning report."""
from __future__ import annotations

import itertools
import json

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ncap.models.pruning import Pruner, paper_cnn, paper_mlp
from ncap.network import (
    core_numbers,
    dormant_neurons,
    esd,
    esd_report,
    kshell,
    network_from_model,
    network_from_weights,
    preferential_attachment,
    pruning_report,
)


def _nx_core(adj) -> np.ndarray:
    g = nx.from_scipy_sparse_array(sp.csr_matrix((adj > 0).astype(int)))
    core = nx.core_number(g)
    return np.array([core[i] for i in range(adj.shape[0])])


@pytest.mark.parametrize("seed", range(6))
def test_core_numbers_match_networkx_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    g = nx.gnp_random_graph(n, float(rng.uniform(0.02, 0.4)), seed=seed)
    adj = nx.to_scipy_sparse_array(g, nodelist=range(n), dtype=np.int64)
    np.testing.assert_array_equal(core_numbers(adj), _nx_core(adj))


@pytest.mark.parametrize("seed", range(4))
def test_kshell_of_layered_sparse_network_matches_networkx(seed):
    rng = np.random.default_rng(seed)
    sizes = [12, 20, 15, 4]
    ws = [rng.normal(size=(o, i)) * (rng.random((o, i)) < rng.uniform(0.05, 0.4)) for i, o in itertools.pairwise(sizes)]
    net = network_from_weights(ws)
    adj = net.adjacency(weighted=False)
    res = kshell(net, weighted=False)
    core = np.concatenate(res["core"])
    np.testing.assert_array_equal(core, _nx_core(adj))
    assert res["k_max"] == core.max() and res["core_size"] == int((core == core.max()).sum())
    assert sum(sum(r["shells"].values()) for r in res["layers"]) == sum(sizes)


def _naive_weighted_core(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    np.fill_diagonal(a, 0)
    n = len(a)
    alive = np.ones(n, bool)
    core = np.zeros(n, int)
    k = 0
    while alive.any():
        deg = (a[:, alive].sum(1))
        k = max(k, deg[alive].min())
        while True:
            deg = a[:, alive].sum(1)
            cand = np.flatnonzero(alive & (deg <= k))
            if not cand.size:
                break
            core[cand[0]] = k  # one node at a time
            alive[cand[0]] = False
    return core


def test_core_numbers_weighted_multiplicities():
    rng = np.random.default_rng(3)
    for _ in range(5):
        n = 15
        upper = np.triu(rng.integers(0, 4, (n, n)) * (rng.random((n, n)) < 0.3), 1)
        a = upper + upper.T
        np.testing.assert_array_equal(core_numbers(sp.csr_matrix(a)), _naive_weighted_core(a))


def test_dormant_and_isolated_counts():
    w1 = np.array([[1.0, 0, 2], [0, 0, 0], [0, 1, 0]])  # hidden node 1: no input
    w2 = np.array([[1.0, 0, 0], [1, 0, 1]])  # hidden 1 has no output either; last layer dense (not pruned)
    w3 = np.ones((2, 2))
    degs = network_from_weights([w1, w2, w3]).degrees()
    rows = {r["layer"]: r for r in dormant_neurons(degs, thresholds=(1, 3))}
    # input degrees [1, 1, 1]; hidden1 degrees in [2, 0, 1] + out [2, 0, 1] = [4, 0, 2]; hidden2 in [1, 2]
    assert rows["input"]["isolated"] == 0 and rows["input"]["dormant"] == {"1": 0, "3": 3}
    assert rows["layer1"]["isolated"] == 1 and rows["layer1"]["no_input"] == 1 and rows["layer1"]["no_output"] == 1
    assert rows["layer1"]["dormant"] == {"1": 1, "3": 2}
    assert rows["layer2"]["dormant"] == {"1": 0, "3": 2} and rows["layer2"]["no_output"] == 0


def test_esd_is_spectrum_of_wtw_over_n():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 8))
    ev = esd(w)
    ref = np.sort(np.linalg.eigvalsh(w.T @ w / 8))[-5:]  # the 5 nonzero eigenvalues of the 8x8 X
    np.testing.assert_allclose(ev, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ev, np.sort(np.linalg.svd(w, compute_uv=False) ** 2 / 8))
    assert esd(torch.randn(6, 2, 3, 3)).shape == (6,)  # conv reshaped to 6 x 18


def test_esd_report_fits_heavy_tailed_matrix():
    torch.manual_seed(0)
    m = paper_mlp(200, 10, (300,))
    with torch.no_grad():
        m.fc1.weight.copy_(torch.distributions.StudentT(2.0).sample(m.fc1.weight.shape))
    rows = {r["layer"]: r for r in esd_report(m)}
    assert rows["fc1"]["n_eigs"] == 200 and rows["fc1"]["alpha"] is not None and rows["fc1"]["alpha"] > 1
    assert rows["fc2"]["alpha"] is not None or "reason" in rows["fc2"]


def test_preferential_attachment_hand_example():
    dense = np.ones((2, 2))
    before = network_from_weights([np.array([[1.0, 0, 0], [1, 1, 0]]), dense])
    after = network_from_weights([np.array([[1.0, 1, 0], [1, 1, 1]]), dense])
    res = preferential_attachment(before, after)
    (pair,) = res["delta"]
    assert pair["lower"] == "input" and pair["upper"] == "layer1" and pair["new_connections"] == 2
    assert pair["d1"] == [0, 1, 2] and pair["d2"] == [1, 2]
    # new edges: (lower deg 1, upper deg 1) and (lower deg 0, upper deg 2); one node pair per cell
    assert pair["delta"] == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    om = {r["layer"]: r for r in res["omega"]}
    assert om["input"]["d"] == [0, 1, 2] and om["input"]["omega"] == [1.0, 1.0, 0.0]
    assert om["layer1"]["d"] == [1, 2] and om["layer1"]["omega"] == [1.0, 1.0]
    # per free slot: input nodes with degree 0/1/2 had 2/1/0 unconnected partners in layer1
    assert om["input"]["omega_free"] == [0.5, 1.0, None]
    assert om["layer1"]["omega_free"] == [0.5, 1.0]
    json.dumps(res)


def _pa_snapshots(seed: int, preferential: bool):
    rng = np.random.default_rng(seed)
    n0, n1 = 200, 150
    prob = np.outer(rng.pareto(3.0, n1) + 1, rng.pareto(3.0, n0) + 1)
    prob = np.clip(0.05 * prob / prob.mean(), 0, 1)
    w0 = rng.random((n1, n0)) < prob
    w1 = w0 | (rng.random((n1, n0)) < (prob if preferential else 0.05))
    dense = np.ones((3, n1))
    return network_from_weights([w0.astype(float), dense]), network_from_weights([w1.astype(float), dense])


@pytest.mark.parametrize("seed", [0, 1])
def test_preferential_attachment_detects_degree_proportional_growth(seed):
    res = preferential_attachment(*_pa_snapshots(seed, True), bins=8)
    assert res["delta"][0]["corr_d1d2"] > 0.5
    om = {r["layer"]: r for r in res["omega"]}
    assert om["input"]["corr"] > 0.8 and om["layer1"]["corr"] > 0.8 and om["input"]["slope"] > 0
    # control: new links uniformly at random -> no positive dependence on d1*d2
    ctrl = preferential_attachment(*_pa_snapshots(seed, False), bins=8)
    assert ctrl["delta"][0]["corr_d1d2"] < 0.2
    with pytest.raises(ValueError, match="architecture"):
        preferential_attachment(_pa_snapshots(seed, True)[0], network_from_weights([np.ones((3, 200))]))


def test_pruning_report_is_json_and_plots(tmp_path):
    torch.manual_seed(0)
    m = paper_mlp(30, 4, (64, 48))
    Pruner(m).prune(0.6)
    rep = pruning_report(m, plot_dir=tmp_path, n_bootstrap=5)
    text = json.dumps(rep)
    assert "NaN" not in text
    names = [r["layer"] for r in rep["layers"]]
    assert names == ["input", "fc1", "fc2"]
    fc1 = rep["layers"][1]
    assert fc1["sides"] == "lower+upper" and fc1["fit"]["fitted"]
    assert {"alpha", "xmin", "ks", "p_value"} <= set(fc1["fit"]["power_law"])
    assert {"alpha", "xmin", "xmax", "ks"} <= set(fc1["fit"]["truncated_power_law"])
    assert 0.0 <= fc1["fit"]["power_law"]["p_value"] <= 1.0
    assert "best_alternative" in fc1["fit"] and "kshell" in fc1 and "dormant" in fc1
    assert rep["sparsity"]["fc1"] == pytest.approx(0.6, abs=1e-3) and rep["sparsity"]["fc3"] == 0.0
    assert [e["layer"] for e in rep["esd"]] == ["fc1", "fc2", "fc3"]
    assert (tmp_path / "ccdf_fc1.png").stat().st_size > 1000 and (tmp_path / "ccdf_all.png").exists()


def test_pruning_report_conv_model():
    m = paper_cnn(1, 10, 28, channels=8, hidden=32)
    Pruner(m).prune(0.5)
    rep = pruning_report(m, input_shape=(1, 28, 28), with_esd=False)
    rows = {r["layer"]: r for r in rep["layers"]}
    assert rows["input"]["fit"]["fitted"] is False  # one input channel: nothing to fit
    assert rows["conv1"]["nodes"] == 8 and rows["fc3"]["nodes"] == 32
    net = network_from_model(m, input_shape=(1, 28, 28))
    assert rep["kshell"]["k_max"] == int(np.concatenate(kshell(net)["core"]).max())
