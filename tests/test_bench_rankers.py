"""Benchmark rankers on hand-made runs whose right answers are known."""
import numpy as np
import pytest

from ncap.bench import rankers


def fake_run(n_obs=8, per_epoch=8, intercept=0.9, slope=-2.0):
    """A run whose accuracy is exactly linear in β_eff: ncap must extrapolate to ``intercept``."""
    epoch = np.arange(1, n_obs + 1) / per_epoch
    beta = 0.2 * np.exp(-epoch)  # decays towards 0, never 0
    acc = intercept + slope * beta
    return {"status": "ok", "candidate": "x", "epoch": epoch.tolist(), "val_accuracy": acc.tolist(),
            "train_loss": (1 / epoch).tolist(),
            "beta_eff": {"magnitude": beta.tolist()}, "beta_denominator": {"magnitude": np.ones(n_obs).tolist()}}


@pytest.mark.parametrize("variant,t0,stride", [("default", 1, 1), ("magnitude", 0, 2), ("support", 2, 4)])
def test_ncap_name_round_trip(variant, t0, stride):
    assert rankers.parse_ncap_name(rankers.ncap_name(variant, t0, stride)) == (variant, t0, stride)
    assert rankers.ncap_name("magnitude", 1) == "ncap[magnitude,t0=1]"  # stride 1 keeps the historic names


def test_ncap_extrapolates_to_beta_zero_with_every_and_every_other_observation():
    run = fake_run()
    for stride in (1, 2):
        pred = rankers.ncap_prediction(run, k=1.0, variant="magnitude", t0=0, stride=stride)
        assert pred.method == "beta_extrapolation"
        assert pred.accuracy == pytest.approx(0.9, abs=2e-3)


def test_stride_keeps_the_latest_observation_and_counts_back():
    run = fake_run()
    # only 3 observations up to k = 0.375: stride 2 keeps epochs 0.375 and 0.125 -> too few -> fallback
    pred = rankers.ncap_prediction(run, k=0.375, variant="magnitude", t0=0, stride=2)
    assert pred.method == "fallback_last" and pred.n_points == 2
    assert pred.accuracy == pytest.approx(rankers.val_acc_score(run, 0.375))  # the latest observation
    full = rankers.ncap_prediction(run, k=0.375, variant="magnitude", t0=0, stride=1)
    assert full.method == "beta_extrapolation"


def test_failed_run_has_no_prediction():
    run = {**fake_run(), "status": "failed"}
    assert rankers.ncap_prediction(run, 1.0, "magnitude", 0) is None
    assert np.isnan(rankers.ncap_score(run, 1.0, "magnitude", 0))
