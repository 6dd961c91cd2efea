"""`ncap sparse-train` end to end on tiny data, and its refusals (exit 2 with the reason)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ncap.service.cli import main


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """120 8x8 images of 3 classes that a small MLP separates (class-dependent bright blocks)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.random((120, 1, 8, 8)).astype(np.float32) * 0.3
    for c in range(3):
        x[y == c, 0, 2 * c:2 * c + 3, :] += 0.7
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=np.clip(x, 0, 1), y=y)
    return str(path)


def test_report_files_plots_and_arrays(tiny_npz, tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["sparse-train", "--data", tiny_npz, "--model", "mlp:24,16", "--rule", "dense,momentum", "--density", "er",
                 "--profile", "lognormal", "--profile-cv", "1.0", "--epochs", "2", "--batch-size", "16",
                 "--sparsity", "0.7", "--out", str(out), "--quiet"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in rep["runs"]] == ["dense", "momentum-er-lognormalcv1"]
    run = rep["runs"][1]
    assert run["updates"] == 3  # half-epoch updates over 2 epochs of 6 steps
    assert run["init"][0]["fan_in_cv"] == pytest.approx(1.0, abs=0.05)
    assert run["fits"]["fc1"]["n"] == 24 and run["last"]["layers"]["fc2"]["fan_in_cv"] > 0
    assert (out / "report.md").read_text().startswith("| run |")
    for name in ("fan_in_cv.png", "dormant.png", "degree_cv.png"):
        assert (out / name).stat().st_size > 0
    folder = out / "runs" / "momentum-er-lognormalcv1"
    arrays = np.load(folder / "topology.npz")
    assert arrays["fc1/fan_in"].shape == (4, 24) and arrays["fc1/degree"].shape == (4, 24)
    assert (folder / "ccdf_epochs.png").exists() and (folder / "ccdf_final_all.png").exists()
    assert "| dense |" in capsys.readouterr().out


def test_every_rule_and_profiles_run_as_a_grid(tiny_npz, capsys):
    code = main(["sparse-train", "--data", tiny_npz, "--model", "mlp:24,16", "--rule", "static,random,gradient",
                 "--density", "uniform", "--profile", "exponential,powerlaw", "--profile-cv", "1.0", "--epochs", "1",
                 "--batch-size", "32", "--sparsity", "0.7", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    for rule in ("static", "random", "gradient"):
        assert f"| {rule}-uniform-exponential |" in text and f"| {rule}-uniform-powerlawcv1 |" in text


def test_cnn_runs(tiny_npz, tmp_path):
    code = main(["sparse-train", "--data", tiny_npz, "--model", "cnn", "--rule", "gradient", "--epochs", "1",
                 "--batch-size", "32", "--sparsity", "0.5", "--delta-t", "1", "--quiet", "--out", str(tmp_path)])
    assert code == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    assert set(rep["runs"][0]["last"]["layers"]) == {"conv1", "conv2", "fc3"}


@pytest.mark.parametrize("argv, reason", [
    (["--rule", "magic"], "rule"),
    (["--profile", "zigzag"], "unknown profile"),
    (["--profile", "lognormal"], "needs profile_cv"),
    (["--sparsity", "1.5"], "sparsity"),
    (["--model", "resnet18"], "model must be"),
    (["--data", "no-such-dataset"], "no-such-dataset"),
])
def test_bad_input_exits_2_with_the_reason(argv, reason, capsys):
    assert main(["sparse-train", "--epochs", "1", "--quiet", *argv]) == 2
    assert reason in capsys.readouterr().err
