"""Executor seam without a Ray cluster: the local executor's hooks, option checks, and `ncap rank`'s exit 2
for bad executor flags (all refused before any training or Ray start)."""
from __future__ import annotations

import numpy as np
import pytest

from ncap.models.recipe import Recipe
from ncap.service.cli import main
from ncap.service.executors import LocalExecutor, RayExecutor, check_ray_address, make_executor
from ncap.service.ranking import run_ranking

TINY = {"epochs": 1, "batch_size": 64, "image_size": 16, "evals_per_epoch": 2, "beta_batch_size": 64,
        "probe_width": 16, "num_workers": 0, "measure_latency": False}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    from ncap.models.data import load_dataset

    ds = load_dataset("digits")
    keep = np.flatnonzero(np.arange(len(ds.y)) % 6 == 0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez_compressed(path, x=ds.x[keep], y=ds.y[keep])
    return path


def test_local_executor_calls_every_hook_in_order_and_reuses_completed(tiny_npz):
    calls = []
    cfg = Recipe(**TINY)
    first = run_ranking(str(tiny_npz), ["resnet10t=random"], cfg, None, progress=False)
    doc = run_ranking(str(tiny_npz), ["resnet10t=random", "mobilenetv3_small_050=random"], cfg, None,
                      progress=False, executor=LocalExecutor(),
                      completed={"resnet10t=random": first.candidates[0].model_dump()},
                      on_candidate_start=lambda n: calls.append(("start", n)),
                      on_epoch=lambda n, e, m: calls.append(("epoch", n, e)),
                      on_candidate_done=lambda r: calls.append(("done", r.candidate)),
                      should_stop=lambda: False)
    m = "mobilenetv3_small_050=random"
    assert [c[:2] for c in calls] == [("start", m), ("epoch", m), ("epoch", m), ("done", m)]
    assert 0 < calls[1][2] < calls[2][2] == 1.0  # two observations in the one epoch
    by = {r.candidate: r for r in doc.candidates}
    assert by["resnet10t=random"].reused and not by[m].reused  # the finished one is not trained again
    assert by["resnet10t=random"].val_accuracy == first.candidates[0].val_accuracy


@pytest.mark.parametrize("address", ["", "host", "host:0", "host:99999", "host:port", "ray://:10001"])
def test_bad_ray_addresses_are_refused(address):
    with pytest.raises(ValueError, match="Ray address"):
        check_ray_address(address)


@pytest.mark.parametrize("address", [None, "auto", "10.0.0.5:6379", "ray://head:10001", "[::1]:6379"])
def test_good_ray_addresses_pass(address):
    assert check_ray_address(address) == address


@pytest.mark.parametrize(("options", "message"), [
    ({"num_cpus": 0}, "cpus per candidate must be > 0"),
    ({"num_gpus": -1}, "gpus per candidate must be >= 0"),
    ({"num_gpus": 1.5}, "whole number"),
    ({"num_cpus": float("nan")}, "cpus per candidate"),
    ({"max_retries": -1}, "max_retries"),
])
def test_bad_resources_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        RayExecutor(**options)


def test_fractions_and_make_executor():
    ex = make_executor("ray", num_cpus=0.5, num_gpus=0.25)
    assert (ex.num_cpus, ex.num_gpus, ex.address) == (0.5, 0.25, None)
    assert isinstance(make_executor(), LocalExecutor)
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        make_executor("dask")


@pytest.mark.parametrize(("argv", "message"), [
    (["--executor", "ray", "--gpus-per-candidate", "1.5"], "whole number"),
    (["--executor", "ray", "--cpus-per-candidate", "0"], "cpus per candidate must be > 0"),
    (["--executor", "ray", "--ray-address", "nowhere"], "Ray address must be"),
    (["--ray-address", "auto"], "--ray-address need(s) --executor ray"),
    (["--gpus-per-candidate", "1", "--max-retries", "2"], "--gpus-per-candidate, --max-retries need(s)"),
])
def test_cli_refuses_bad_executor_flags_with_exit_2(argv, message, capsys, tmp_path):
    assert main(["rank", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained or written


def test_cli_refuses_an_executor_choice_it_does_not_know(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rank", "--executor", "dask"])
    assert exc.value.code == 2 and "invalid choice: 'dask'" in capsys.readouterr().err
