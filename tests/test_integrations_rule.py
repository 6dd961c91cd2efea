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


@pytest.mark.parametrize("final,incumbent_final,expect_stop", [(0.60, 0.90, True), (0.93, 0.90, False),
                                                               (0.89, 0.90, False)])
def test_verdict_is_monte_carlo_of_two_algorithm_1_predictions(final, incumbent_final, expect_stop):
    beta, acc = linear_trajectory(final, slope=-0.8, n=6)
    inc_beta, inc_acc = linear_trajectory(incumbent_final, slope=-0.5, n=12, seed=1)
    v = capacitance_verdict(beta, acc, inc_beta, inc_acc, threshold=0.05)
    mine = predict_final_accuracy(beta, acc, t0=1)
    theirs = predict_final_accuracy(inc_beta[:6], inc_acc[:6], t0=1)  # the incumbent's first 6 observations
    assert v.prediction == mine and v.incumbent == theirs and mine.method == theirs.method == "beta_extrapolation"
    expected = monte_carlo_prob(mine.accuracy, max(mine.std, 0.01), theirs.accuracy, max(theirs.std, 0.01), True)
    assert v.prob_better == pytest.approx(expected, abs=0.005)
    assert v.stop is expect_stop is (v.prob_better < 0.05)


def test_a_bias_shared_by_both_trials_cancels():
    """Both trajectories read 10 points low at β = 0 (the same offset): the comparison is unchanged."""
    beta, acc = linear_trajectory(0.80, slope=-0.8)
    inc_beta, inc_acc = linear_trajectory(0.85, slope=-0.8, seed=1)
    shifted = capacitance_verdict(beta, acc - 0.1, inc_beta, inc_acc - 0.1)
    assert shifted.prob_better == pytest.approx(capacitance_verdict(beta, acc, inc_beta, inc_acc).prob_better, abs=1e-6)


def test_verdict_minimize():
    beta, acc = linear_trajectory(0.30, slope=0.5)  # an error rate heading to 0.30
    inc_beta, inc_acc = linear_trajectory(0.10, slope=0.5, seed=1)
    assert capacitance_verdict(beta, acc, inc_beta, inc_acc, maximize=False).stop
    assert not capacitance_verdict(inc_beta, inc_acc, beta, acc, maximize=False).stop


def test_verdict_never_stops_without_two_real_predictions():
    beta, acc = linear_trajectory(0.2, slope=-0.8)
    inc = linear_trajectory(0.9, slope=-0.8, seed=1)
    few = capacitance_verdict(beta[:2], acc[:2], *inc)  # too few points
    assert not few.stop and np.isnan(few.prob_better)
    flat = capacitance_verdict(np.full(6, 0.3), acc[:6], *inc)  # constant β: the predictor falls back
    assert not flat.stop and flat.prediction.method == "fallback_last"
    assert capacitance_verdict(np.full(6, 0.3), acc[:6], *inc, stop_on_fallback=True).stop
    flat_incumbent = capacitance_verdict(beta, acc, np.full(8, 0.3), inc[1])
    assert not flat_incumbent.stop and "incumbent" in flat_incumbent.reason
    assert not capacitance_verdict(beta, acc, inc[0][:2], inc[1][:2]).stop  # the incumbent has too few
    with pytest.raises(ValueError, match="threshold"):
        capacitance_verdict(beta, acc, *inc, threshold=1.5)
