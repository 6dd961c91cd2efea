"""Magnitude pruning, masks under optimiser steps, three-step retraining, and the `ncap prune` CLI."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from ncap.models.pruning import (
    Pruner,
    accuracy,
    paper_cnn,
    paper_mlp,
    prune_magnitude,
    sparsity_schedule,
    three_step_prune,
    train_classifier,
)
from ncap.network import MASK_ATTR, prunable_layers


def _zeros(m: nn.Module) -> int:
    return int((m.weight == 0).sum())


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9, 0.97])
def test_one_shot_keeps_exact_fraction_per_layer(s):
    model = paper_cnn(1, 10, 28, channels=6, hidden=20)
    pr = prune_magnitude(model, s)
    assert pr.pruned_names == ["conv1", "conv2", "fc3"]  # fc4 (output) left dense
    for name, m in pr.layers.items():
        n = m.weight.numel()
        assert _zeros(m) == round(s * n), name
        assert int((~getattr(m, MASK_ATTR)).sum()) == round(s * n)
    assert _zeros(model.fc4) == 0 and not hasattr(model.fc4, MASK_ATTR)


def test_prunes_smallest_magnitudes_and_options():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.2, 0.05, 4.0, -1.0], [3.0, 0.4, -0.6, 0.7]]))
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 2))
    prune_magnitude(model, 0.5)
    kept = model[0].weight != 0
    expect = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)  # 6 largest |w|
    assert torch.equal(kept, expect)
    m2 = paper_mlp(10, 3, (8,))
    pr = Pruner(m2, include_output=True)
    pr.prune({"fc1": 0.5, "fc2": 0.25})
    assert _zeros(m2.fc1) == 40 and _zeros(m2.fc2) == 6
    assert Pruner(paper_mlp(10, 3, (8,)), ["fc2"]).pruned_names == ["fc2"]
    with pytest.raises(ValueError, match="not Linear/Conv2d"):
        Pruner(m2, ["relu1"])
    with pytest.raises(ValueError, match="sparsity"):
        Pruner(paper_mlp(10, 3, (8,))).prune(1.0)


def test_iterative_schedule_and_monotone_masks():
    sch = sparsity_schedule(0.9, 3)
    assert sch[-1] == 0.9 and np.allclose(1 - np.array(sch), 0.1 ** (np.arange(1, 4) / 3))
    assert sparsity_schedule(0.6, 3, "linear") == pytest.approx([0.2, 0.4, 0.6])
    with pytest.raises(ValueError):
        sparsity_schedule(0.5, 0)
    torch.manual_seed(0)
    model = paper_mlp(30, 4, (25, 20))
    pr = Pruner(model)
    prev = None
    for s in sch:
        pr.prune(s)
        with torch.no_grad():  # weights move between steps (as during retraining)
            for m in pr.layers.values():
                m.weight.add_(0.5 * torch.randn_like(m.weight)).mul_(getattr(m, MASK_ATTR))
        masks = {k: v.clone() for k, v in pr.masks.items()}
        if prev is not None:
            for k, mk in masks.items():
                assert not (mk & ~prev[k]).any()  # nothing pruned comes back
        prev = masks
    for name, m in pr.layers.items():
        assert int((~pr.masks[name]).sum()) == round(0.9 * m.weight.numel())


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_masks_survive_optimizer_steps(opt_name):
    torch.manual_seed(0)
    model = paper_mlp(12, 3, (16, 8))
    keys = set(model.state_dict())
    pr = Pruner(model)
    pr.prune(0.75)
    assert set(model.state_dict()) == keys and isinstance(model.fc1.weight, nn.Parameter)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) if opt_name == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.05))
    pr.attach(opt)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert (model.fc1.weight.grad[~pr.masks["fc1"]] == 0).all()
        opt.step()
    for name, m in pr.layers.items():
        assert (m.weight[~pr.masks[name]] == 0).all()
        assert int((m.weight == 0).sum()) >= round(0.75 * m.weight.numel())
    assert (model.fc3.weight != 0).all()  # output stays dense and trains
    clone = copy.deepcopy(model)
    assert torch.equal(getattr(clone.fc1, MASK_ATTR), pr.masks["fc1"])
    pr.remove()
    assert not hasattr(model.fc1, MASK_ATTR) and set(model.state_dict()) == keys


def test_prunable_layers_execution_order():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(4, 2)
            self.a = nn.Linear(3, 4)

        def forward(self, x):
            return self.b(self.a(x))

    m = Odd()
    assert [n for n, _ in prunable_layers(m)] == ["b", "a"]
    assert [n for n, _ in prunable_layers(m, torch.zeros(1, 3))] == ["a", "b"]


def _digits():
    from ncap.models.data import load_dataset, split_dataset

    tr, va = split_dataset(load_dataset("digits"), 0.25, 0)
    return (tr.x, tr.y), (va.x, va.y)


def test_retraining_recovers_accuracy_after_pruning():
    train, val = _digits()
    torch.manual_seed(0)
    model = paper_mlp(64, 10, (64, 32))
    res = three_step_prune(model, train, val, sparsity=0.95, epochs=8, retrain_epochs=4, lr=0.05, seed=0)
    assert res.dense_accuracy > 0.9
    assert res.pruned_accuracy < res.dense_accuracy - 0.1  # 95 % pruning hurts ...
    assert res.retrained_accuracy > res.pruned_accuracy + 0.1  # ... and retraining the survivors repairs it
    for name, m in res.pruner.layers.items():
        assert int((~res.pruner.masks[name]).sum()) == round(0.95 * m.weight.numel())
        assert (m.weight[~res.pruner.masks[name]] == 0).all()
    assert res.sparsity["fc1"] == pytest.approx(0.95, abs=1e-3)
    json.dumps(res.to_dict())


def test_three_step_iterative():
    train, val = _digits()
    model = paper_mlp(64, 10, (32, 16))
    res = three_step_prune(model, train, val, sparsity=0.8, epochs=2, retrain_epochs=1, iterative=3, seed=1)
    assert [round(s["target_sparsity"], 6) for s in res.steps] == [round(v, 6) for v in sparsity_schedule(0.8, 3)]
    assert res.sparsity == pytest.approx({"fc1": 0.8, "fc2": 0.8}, abs=2e-3)
    assert accuracy(model, *val) == pytest.approx(res.retrained_accuracy)
    with pytest.raises(ValueError):
        train_classifier(model, np.zeros((0, 1, 8, 8)), np.zeros(0), epochs=1)


# ------------------------------------------------------------------------------------------------ CLI


def _cli(argv, capsys):
    from ncap.service.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_prune_mlp_end_to_end(tmp_path, capsys):
    from ncap.models.data import load_dataset, sample_per_class

    small = sample_per_class(load_dataset("digits"), 40)  # 400 images keep the 1024-wide MLP quick
    data = tmp_path / "digits400.npz"
    np.savez(data, x=small.x[:, 0], y=small.y)
    out = tmp_path / "run"
    rc, stdout, _ = _cli(["prune", "--candidate", "mlp", "--sparsity", "0.9", "--data", str(data), "--epochs", "1",
                          "--retrain-epochs", "1", "--out", str(out), "--json"], capsys)
    assert rc == 0
    rep = json.loads(stdout)
    assert rep["model"] == {"kind": "mlp", "hidden": [1024, 1024]}
    assert [r["layer"] for r in rep["report"]["layers"]] == ["input", "fc1", "fc2"]
    assert rep["report"]["sparsity"]["fc1"] == pytest.approx(0.9, abs=1e-4)
    assert rep["report"]["sparsity"]["fc3"] == 0.0
    fc1 = rep["report"]["layers"][1]
    assert fc1["fit"]["fitted"] and fc1["fit"]["truncated_power_law"]["xmax"] >= fc1["fit"]["truncated_power_law"]["xmin"]
    assert "kshell" in fc1 and "k_max" in rep["report"]["kshell"]
    for f in ("report.json", "report.md", "ccdf_fc1.png", "ccdf_all.png"):
        assert (out / f).is_file(), f
    assert "| fc1 | 1024 |" in (out / "report.md").read_text()


def test_cli_prune_table_iterative_small_mlp(capsys):
    rc, stdout, err = _cli(["prune", "--candidate", "mlp:32,16", "--sparsity", "0.5", "--epochs", "1",
                            "--retrain-epochs", "1", "--iterative", "2"], capsys)
    assert rc == 0
    assert "val accuracy dense" in stdout and "fc1" in stdout and "k-shell" in stdout
    assert "step 2/2" in err


@pytest.mark.parametrize("argv, msg", [
    (["--candidate", "mlp", "--sparsity", "1.5"], "--sparsity must lie in [0, 1)"),
    (["--candidate", "mlp", "--sparsity", "-0.1"], "--sparsity must lie in [0, 1)"),
    (["--candidate", "mlp:abc", "--sparsity", "0.5"], "bad MLP spec"),
    (["--candidate", "mlp", "--sparsity", "0.5", "--iterative", "0"], "--iterative must be >= 1"),
    (["--candidate", "mlp", "--sparsity", "0.5", "--epochs", "-1"], "--epochs must be >= 0"),
    (["--candidate", "mlp", "--sparsity", "0.5", "--data", "/nonexistent/data.npz"], "error"),
])
def test_cli_prune_bad_args(argv, msg, capsys):
    rc, stdout, err = _cli(["prune", *argv], capsys)
    assert rc == 2 and stdout == ""
    assert err.startswith("ncap prune: error:") and msg in err


def test_cli_prune_missing_required(capsys):
    with pytest.raises(SystemExit) as exc:
        _cli(["prune", "--candidate", "mlp"], capsys)
    assert exc.value.code == 2
