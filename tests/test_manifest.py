"""`ncap rank --manifest`: bad manifests exit 2 naming the entry and field; two datasets are ranked into
their own folders with a summary; a rerun skips finished pairs (local executor; tests/test_ray_executor.py
covers the Ray executor)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ncap.service.cli import main

FLAGS = ["--batch-size", "64", "--image-size", "16", "--evals-per-epoch", "2", "--beta-batch-size", "64",
         "--probe-width", "16", "--num-workers", "0", "--epochs", "1", "--quiet", "--no-plots"]
A, B = "resnet10t=random", "mobilenetv3_small_050=random"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from ncap.models.data import load_dataset

    ds = load_dataset("digits")
    root = tmp_path_factory.mktemp("manifest")
    for name, step in (("one", 6), ("two", 7)):
        keep = np.flatnonzero(np.arange(len(ds.y)) % step == 0)
        np.savez_compressed(root / f"{name}.npz", x=ds.x[keep], y=ds.y[keep])
    return root


def _write(folder, text: str):
    path = folder / "m.toml"
    path.write_text(text)
    return path


def _rank(path, out, *extra):
    return main(["rank", "--manifest", str(path), "--out", str(out), *FLAGS, *extra])


@pytest.mark.parametrize(("text", "message"), [
    ('[[datasets]]\ndata = "one.npz"\ncolour = "red"\n', "datasets.0.colour: Extra inputs are not permitted"),
    ('[[datasets]]\ndata = "one.npz"\nrecipe = { epochs = 0 }\n', "datasets[0] (one): recipe.epochs:"),
    ('[recipe]\nlr = "fast"\n[[datasets]]\ndata = "one.npz"\n', "datasets[0] (one): recipe.lr:"),
    ('[[datasets]]\ndata = "one.npz"\n[[datasets]]\ndata = "missing.npz"\n', "datasets[1] (missing): data:"),
    ('[[datasets]]\ndata = "one.npz"\ncandidates = ["no_such_net"]\n', "datasets[0] (one): candidates:"),
    ('[[datasets]]\ndata = "one.npz"\n[[datasets]]\nname = "one"\ndata = "two.npz"\n', "datasets[1]: name: 'one'"),
    ('[[datasets]]\nname = "../up"\ndata = "one.npz"\n', "datasets.0.name: String should match pattern"),
    ("datasets = []\n", "datasets: List should have at least 1 item"),
    ("[[datasets]\n", "not valid TOML"),
])
def test_bad_manifests_exit_2_naming_entry_and_field(folder, tmp_path, capsys, text, message):
    assert _rank(_write(folder, text), tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_manifest_excludes_data_flags(folder, tmp_path, capsys):
    path = _write(folder, '[[datasets]]\ndata = "one.npz"\n')
    assert _rank(path, tmp_path, "--data", "digits") == 2
    assert "drop --data/--candidates" in capsys.readouterr().err


def test_two_datasets_rank_and_a_rerun_skips_finished_pairs(folder, tmp_path, capsys):
    path = _write(folder, f'candidates = ["{A}"]\n[[datasets]]\ndata = "one.npz"\n'
                          f'[[datasets]]\nname = "second"\ndata = "two.npz"\ncandidates = ["{A}", "{B}"]\n'
                          'recipe = { seed = 3 }\n')
    out = tmp_path / "out"
    assert _rank(path, out) == 0
    first = {r["dataset"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(first) == {"one", "second"} and not any(r["error"] or r["reused"] for r in first.values())
    assert (first["one"]["candidates"], first["second"]["candidates"]) == (1, 2)
    second_doc = json.loads((out / "second" / "ranking.json").read_text())
    assert second_doc["config"]["seed"] == 3 and second_doc["config"]["epochs"] == 1  # file over flags
    assert len(list((out / "second" / "candidates").glob("*.json"))) == 2
    assert "| second |" in (out / "summary.md").read_text()

    # lose one finished record of 'second' (as if the run had died before it finished): only it is retrained
    lost = next(p for p in (out / "second" / "candidates").glob("*.json") if json.loads(p.read_text())["candidate"] == B)
    lost.unlink()
    capsys.readouterr()
    assert _rank(path, out) == 0
    trained = [line for line in capsys.readouterr().out.splitlines() if line.endswith(" ok")]
    assert trained == [f"second: {B} ok"]
    again = {r["dataset"]: r for r in json.loads((out / "summary.json").read_text())}
    assert (again["one"]["reused"], again["second"]["reused"]) == (1, 1)
    doc = json.loads((out / "second" / "ranking.json").read_text())
    by = {c["candidate"]: c for c in doc["candidates"]}
    old = {c["candidate"]: c for c in second_doc["candidates"]}
    assert by[A]["reused"] and by[A]["val_accuracy"] == old[A]["val_accuracy"]
    assert not by[B]["reused"] and by[B]["val_accuracy"] == old[B]["val_accuracy"]  # same seed, same result

    # a changed recipe invalidates that dataset's records (and only its)
    path.write_text(path.read_text().replace("seed = 3", "seed = 4"))
    capsys.readouterr()
    assert _rank(path, out) == 0
    trained = sorted(line for line in capsys.readouterr().out.splitlines() if line.endswith(" ok"))
    assert trained == sorted([f"second: {A} ok", f"second: {B} ok"])


def test_a_dataset_that_fails_to_load_is_an_error_row_and_exit_1(folder, tmp_path):
    """The up-front check reads only headers; an image array holding NaN fails when the dataset loads, which
    ends that dataset (an error row in the summary), not the run."""
    x = np.full((20, 1, 8, 8), np.nan, dtype=np.float32)
    np.savez(folder / "nan.npz", x=x, y=np.arange(20) % 2)
    path = _write(folder, f'[[datasets]]\ndata = "nan.npz"\ncandidates = ["{A}"]\n')
    assert _rank(path, tmp_path / "out") == 1
    (row,) = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert row["dataset"] == "nan" and "NaN" in row["error"]
    assert "error: " in (tmp_path / "out" / "summary.md").read_text()
