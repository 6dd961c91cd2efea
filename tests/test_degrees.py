"""Degree counting (network/degrees.py) against hand counts and the paper's conv example."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ncap.models.pruning import Pruner, paper_cnn, paper_mlp
from ncap.network import conv_counts, linear_counts, network_from_model, network_from_weights


def _tiny_mlp() -> nn.Sequential:
    """3 inputs -> 2 hidden -> 2 hidden -> 2 outputs with a hand-chosen sparsity pattern."""
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0.0, 2.0],
                                        [0.0, 0.0, 3.0]]))
        m[2].weight.copy_(torch.tensor([[1.0, 1.0],
                                        [0.0, 0.0]]))
        m[4].weight.copy_(torch.tensor([[1.0, 1.0],
                                        [1.0, 1.0]]))  # output layer: dense, not pruned
    return m


def test_hand_built_mlp_degrees():
    degs = {d.name: d for d in network_from_model(_tiny_mlp()).degrees()}
    # output layer "4" touches no pruned layer -> not reported (the softmax layer in the paper)
    assert list(degs) == ["input", "0", "2"]
    # input: upper side only; input 1 has no connection
    np.testing.assert_array_equal(degs["input"].degree, [1, 0, 2])
    assert degs["input"].counts_upper and not degs["input"].counts_lower
    # first hidden: lower (from input) + upper (to second hidden)
    np.testing.assert_array_equal(degs["0"].in_degree, [2, 1])
    np.testing.assert_array_equal(degs["0"].out_degree, [1, 1])
    np.testing.assert_array_equal(degs["0"].degree, [3, 2])
    # last pruned layer: lower side only, even though it has 2 dense connections to the output
    np.testing.assert_array_equal(degs["2"].in_degree, [2, 0])
    np.testing.assert_array_equal(degs["2"].out_degree, [2, 2])
    np.testing.assert_array_equal(degs["2"].degree, [2, 0])


def test_network_from_weights_matches_model_and_pruned_output():
    m = _tiny_mlp()
    a = network_from_model(m).degrees()
    b = network_from_weights([m[0].weight, m[2].weight, m[4].weight], names=["0", "2", "4"]).degrees()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.degree, y.degree)
    # with every layer pruned, the output layer is reported (lower side) and layer 2 counts both sides
    c = {d.name: d for d in network_from_weights([m[0].weight, m[2].weight, m[4].weight],
                                                 names=["0", "2", "4"], pruned=[True] * 3).degrees()}
    np.testing.assert_array_equal(c["2"].degree, [4, 2])
    np.testing.assert_array_equal(c["4"].degree, [2, 2])


def test_paper_conv_example_unpruned():
    """§3.2: conv1 map on 28x28 input has 25*576*1 + 25*64*32 = 65 600 connections."""
    net = network_from_model(paper_cnn(1, 10, 28), input_shape=(1, 28, 28))
    degs = {d.name: d for d in net.degrees()}
    conv1 = degs["conv1"]
    assert conv1.kind == "conv" and conv1.size == 32
    np.testing.assert_array_equal(conv1.in_degree, np.full(32, 25 * 576 * 1))
    np.testing.assert_array_equal(conv1.out_degree, np.full(32, 25 * 64 * 32))
    np.testing.assert_array_equal(conv1.degree, np.full(32, 65_600))
    # conv2 maps (8x8): 25*64*32 from conv1; to fc3: 512 inputs = 32 maps x 16 positions, 256 units
    np.testing.assert_array_equal(degs["conv2"].degree, np.full(32, 25 * 64 * 32 + 16 * 256))
    # fc3 is the last pruned layer (fc4 is the dense softmax layer): lower side only
    np.testing.assert_array_equal(degs["fc3"].degree, np.full(256, 512))
    assert [d.name for d in net.degrees()] == ["input", "conv1", "conv2", "fc3"]


def test_paper_conv_example_pruned_taps():
    model = paper_cnn(1, 10, 28)
    with torch.no_grad():
        model.conv1.weight[0, 0, :2, :] = 0.0  # 10 taps of map 0 removed
        model.conv2.weight[3, 0, 0, 0] = 0.0  # 1 tap from conv1 map 0 into conv2 map 3
        model.fc3.weight[:, 16:32] = 0.0  # every fc3 weight from conv2 map 1
    degs = {d.name: d for d in network_from_model(model, input_shape=(1, 28, 28)).degrees()}
    assert degs["conv1"].degree[0] == 65_600 - 10 * 576 - 64
    assert degs["conv1"].degree[1] == 65_600
    assert degs["input"].degree[0] == 32 * 25 * 576 - 10 * 576
    assert degs["conv2"].degree[3] == 25 * 64 * 32 - 64 + 4096
    assert degs["conv2"].degree[1] == 25 * 64 * 32  # no connection left to fc3
    assert degs["fc3"].degree[0] == 512 - 16


def test_conv_counts_groups_and_linear_grouping():
    nz = np.ones((4, 1, 3, 3), bool)  # depthwise-like: 4 groups, 1 input channel each
    c = conv_counts(nz, (5, 5), groups=4)
    np.testing.assert_array_equal(c, np.eye(4, dtype=np.int64) * 9 * 25)
    w = np.zeros((2, 6), bool)
    w[0, [0, 1, 4]] = True
    np.testing.assert_array_equal(linear_counts(w, 3), [[2, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError):
        linear_counts(w, 4)


def test_masks_and_pruner_define_pruned_layers():
    torch.manual_seed(0)
    m = paper_mlp(20, 3, (16, 8))
    pr = Pruner(m)
    pr.prune(0.5)
    degs = network_from_model(m).degrees()
    assert [d.name for d in degs] == ["input", "fc1", "fc2"]
    assert sum(int(d.degree.sum()) for d in degs if d.name == "input") == 160  # half of 20*16
    # explicit masks override the weights
    masks = {"fc1": torch.ones(16, 20, dtype=torch.bool), "fc2": torch.zeros(8, 16, dtype=torch.bool)}
    d2 = {d.name: d for d in network_from_model(m, masks=masks).degrees()}
    np.testing.assert_array_equal(d2["input"].degree, np.full(20, 16))
    np.testing.assert_array_equal(d2["fc2"].degree, np.zeros(8))


def test_conv_needs_input_shape_and_chain_mismatch():
    with pytest.raises(ValueError, match="input_shape"):
        network_from_model(paper_cnn())
    m = nn.Sequential(nn.Linear(4, 5), nn.Linear(6, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not a feed-forward chain"):
        network_from_model(m)
    net = network_from_model(m, strict=False)
    assert [n.name for n in net.nodes] == ["input", "0", "1.in", "1", "2"]
    assert net.notes
