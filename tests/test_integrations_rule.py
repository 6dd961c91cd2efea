"""The stopping rule shared by the Optuna pruner and the Ray Tune scheduler (ncap.integrations.rule),
checked against a brute-force Monte Carlo of the Gaussians and against Algorithm 1 called directly."""
from __future__ import annotations

import numpy as np
import pytest

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.integrations.rule import capacitance_verdict, prob_beats


def monte_carlo_prob(mean, std, target, target_std, maximize, n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(mean, std, n), rng.normal(target, target_std, n)
    return float(np.mean(x > y if maximize else x < y))


@pytest.mark.parametrize("mean,std,target,target_std,maximize", [
    (0.90, 0.02, 0.92, 0.0, True),
    (0.90, 0.05, 0.80, 0.03, True),
    (0.50, 0.10, 0.52, 0.10, True),
    (0.30, 0.04, 0.25, 0.0, False),
    (0.70, 0.01, 0.60, 0.02, False),
])
def test_prob_beats_matches_monte_carlo(mean, std, target, target_std, maximize):
    expected = monte_carlo_prob(mean, std, target, target_std, maximize)
    got = prob_beats(mean, std, target, target_std, maximize=maximize)
    assert got == pytest.approx(expected, abs=4 * np.sqrt(0.25 / 400_000) + 1e-4)


def test_prob_beats_point_masses_and_broadcasting():
    assert prob_beats(0.9, 0.0, 0.8) == 1.0
    assert prob_beats(0.7, 0.0, 0.8) == 0.0
    assert prob_beats(0.8, 0.0, 0.8) == 0.5
    assert prob_beats(0.7, 0.0, 0.8, maximize=False) == 1.0
    out = prob_beats(np.array([0.5, 0.9]), 0.1, 0.7)
    assert out.shape == (2,) and out[0] < 0.5 < out[1]
    with pytest.raises(ValueError, match=">= 0"):
        prob_beats(0.5, -0.1, 0.7)


def linear_trajectory(final, slope, n=8, noise=0.004, seed=0):
    """β shrinking towards 0 and accuracy = final + slope·β + noise: Algorithm 1 should read `final`."""
    rng = np.random.default_rng(seed)
    beta = 0.5 * 0.7 ** np.arange(n)
    return beta, final + slope * beta + rng.normal(0, noise, n)


@pytest.mark.parametrize("final,best,expect_stop", [(0.60, 0.90, True), (0.93, 0.90, False), (0.89, 0.90, False)])
def test_verdict_is_monte_carlo_of_algorithm_1(final, best, expect_stop):
    beta, acc = linear_trajectory(final, slope=-0.8)
    v = capacitance_verdict(beta, acc, best, threshold=0.05)
    pred = predict_final_accuracy(beta, acc, t0=1)
    assert v.prediction == pred and pred.method == "beta_extrapolation"
    sd = max(pred.std, 0.01)
    assert v.prob_better == pytest.approx(monte_carlo_prob(pred.accuracy, sd, best, 0.0, True), abs=0.005)
    assert v.stop is expect_stop is (v.prob_better < 0.05)


def test_verdict_minimize_and_incumbent_uncertainty():
    beta, acc = linear_trajectory(0.30, slope=0.5)  # an error rate heading to 0.30
    assert capacitance_verdict(beta, acc, 0.10, maximize=False).stop
    assert not capacitance_verdict(beta, acc, 0.40, maximize=False).stop
    for best in (0.29, 0.31):  # incumbent noise pulls P(better) towards 1/2 from either side
        sure = capacitance_verdict(beta, acc, best, maximize=False).prob_better
        unsure = capacitance_verdict(beta, acc, best, maximize=False, best_std=0.2).prob_better
        assert abs(unsure - 0.5) < abs(sure - 0.5)


def test_verdict_never_stops_without_a_real_prediction():
    beta, acc = linear_trajectory(0.2, slope=-0.8)
    assert not capacitance_verdict(beta[:2], acc[:2], 0.9).stop  # too few points
    assert np.isnan(capacitance_verdict(beta[:2], acc[:2], 0.9).prob_better)
    flat = capacitance_verdict(np.full(6, 0.3), acc[:6], 0.9)  # constant β: the predictor falls back
    assert not flat.stop and flat.prediction.method == "fallback_last"
    assert capacitance_verdict(np.full(6, 0.3), acc[:6], 0.9, stop_on_fallback=True).stop
    assert not capacitance_verdict(beta, acc, float("nan")).stop
    with pytest.raises(ValueError, match="threshold"):
        capacitance_verdict(beta, acc, 0.9, threshold=1.5)
