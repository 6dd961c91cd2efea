"""CapacitanceScheduler in a real Ray Tune run: local Ray on 127.0.0.1 with a temporary HOME, one CPU, the
digits MLP of docs/examples (β_eff from ncap.BetaEffTracker), trials one at a time. The verdicts are
re-derived independently: Algorithm 1 + a Monte Carlo of the Gaussian."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.integrations.ray_tune import CapacitanceScheduler

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
EPOCHS, GRACE, THRESHOLD = 12, 4, 0.05


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """Ray bound to 127.0.0.1, writing only under temporary folders; workers import docs/examples."""
    home = tmp_path_factory.mktemp("home")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    patch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]))
    patch.syspath_prepend(str(EXAMPLES))
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=temp_dir, log_to_driver=False)
    try:
        yield home
    finally:
        ray.shutdown()
        patch.undo()
        shutil.rmtree(temp_dir, ignore_errors=True)


def monte_carlo_p_better(rows, incumbent_rows, k, n=200_000):
    """P(trial's final > incumbent's) from the first k reported rows of each, by sampling Algorithm 1's two
    Gaussians; NaN where the predictor falls back (no verdict)."""
    preds = [predict_final_accuracy([m["beta_eff"] for m in r[:k]], [m["accuracy"] for m in r[:k]], t0=1,
                                    denominators=[m["beta_denominator"] for m in r[:k]]) for r in (rows, incumbent_rows)]
    if any(p.method != "beta_extrapolation" for p in preds):
        return float("nan")
    rng = np.random.default_rng(0)
    mine, theirs = (rng.normal(p.accuracy, max(p.std, 0.01), n) for p in preds)
    return float(np.mean(mine > theirs))


@pytest.mark.slow
def test_a_real_tune_run_stops_by_the_rule_and_keeps_a_better_trial(local_ray):
    """lr 1e-3 runs first (the incumbent, slow learner), 1e-2 should beat it and must run to the end,
    1e-4 stays at chance and must be stopped early, at the first step where the rule can say so."""
    from ray_tune_scheduler import tune_learning_rate

    results, scheduler = tune_learning_rate([1e-3, 1e-2, 1e-4], epochs=EPOCHS, storage_path=str(local_ray / "results"))
    assert isinstance(scheduler, CapacitanceScheduler) and not results.errors
    by_lr = {r.config["lr"]: r for r in results}
    rows = {lr: r.metrics_dataframe.sort_values("training_iteration").to_dict("records") for lr, r in by_lr.items()}
    incumbent, kept, bad = rows[1e-3], rows[1e-2], rows[1e-4]
    assert len(incumbent) == EPOCHS and len(kept) == EPOCHS  # ran to the end
    assert kept[-1]["accuracy"] > incumbent[-1]["accuracy"]
    assert results.get_best_result().config["lr"] == 1e-2
    assert scheduler.stopped == {by_lr[1e-4].metrics["trial_id"]}
    assert scheduler.completed == {by_lr[lr].metrics["trial_id"]: rows[lr][-1]["accuracy"] for lr in (1e-3, 1e-2)}
    # the kept trial: P(better than the incumbent) >= threshold at every step after the grace period
    for k in range(GRACE, EPOCHS + 1):
        assert not monte_carlo_p_better(kept, incumbent, k) < THRESHOLD - 0.01
    # the stopped trial (incumbent: the kept trial): stopped at the first step where P(better) < threshold
    assert GRACE <= len(bad) <= EPOCHS // 2
    verdicts = [monte_carlo_p_better(bad, kept, k) for k in range(GRACE, len(bad) + 1)]
    assert verdicts[-1] < THRESHOLD and not any(p < THRESHOLD for p in verdicts[:-1]), verdicts
    assert scheduler.verdicts[by_lr[1e-4].metrics["trial_id"]].stop


def test_scheduler_needs_metric_and_mode():
    s = CapacitanceScheduler()
    with pytest.raises(ValueError, match="metric"):
        s.on_trial_add(None, None)
    assert s.set_search_properties("accuracy", "max") and s.metric == "accuracy"
    assert not CapacitanceScheduler("acc", "max").set_search_properties("accuracy", "max")
    with pytest.raises(ValueError, match="mode"):
        CapacitanceScheduler(mode="up")
