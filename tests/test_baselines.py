"""Baseline rankers: hand-computed TSE, exact pow3 curves, and a fake trainer for successive halving."""

import numpy as np
import pytest

from ncap.bench import baselines
from ncap.bench.baselines import (
    learning_curve_extrapolation,
    static_prior,
    successive_halving,
    tse_ema,
)

# ------------------------------------------------------------------------ TSE-EMA


def test_tse_ema_hand_computed():
    # 0.5^2 * 3 + 0.5 * 2 + 1 * 1 = 2.75
    assert tse_ema([3.0, 2.0, 1.0], gamma=0.5) == pytest.approx(-2.75)
    assert tse_ema([3.0, 2.0, 1.0], gamma=1.0) == pytest.approx(-6.0)  # plain TSE
    assert tse_ema(np.array([3.0, 2.0, 1.0])) == pytest.approx(-(0.81 * 3 + 0.9 * 2 + 1))


def test_tse_ema_per_step_inputs_average_within_epochs():
    expected = tse_ema([3.0, 2.0, 1.0], gamma=0.5)
    assert tse_ema([[4.0, 2.0], [2.0], [1.0, 1.0, 1.0]], gamma=0.5) == pytest.approx(expected)
    assert tse_ema([4.0, 2.0, 3.0, 1.0, 1.0, 1.0], gamma=0.5, steps_per_epoch=2) == pytest.approx(expected)
    assert tse_ema(np.array([[4.0, 2.0], [3.0, 1.0], [1.0, 1.0]]), gamma=0.5) == pytest.approx(expected)


def test_tse_ema_faster_training_scores_higher():
    fast = [2.0, 0.8, 0.3, 0.1]
    slow = [2.0, 1.5, 1.0, 0.7]
    assert tse_ema(fast) > tse_ema(slow)


def test_tse_ema_diverged_run_is_nan():
    assert np.isnan(tse_ema([1.0, np.nan, 0.5]))


@pytest.mark.parametrize(
    "losses,kwargs,match",
    [
        ([], {}, "empty"),
        ([1.0, 2.0], {"gamma": 0.0}, "gamma"),
        ([1.0, 2.0], {"gamma": 1.5}, "gamma"),
        ([1.0, 2.0, 3.0], {"steps_per_epoch": 2}, "whole number of epochs"),
        ([1.0, 2.0], {"steps_per_epoch": 0}, "steps_per_epoch"),
        ([[1.0], [2.0]], {"steps_per_epoch": 1}, "flat sequence"),
        ([[1.0], []], {}, "without any step"),
        ([1.0, [2.0]], {}, "flat sequence"),
    ],
)
def test_tse_ema_validation(losses, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tse_ema(losses, **kwargs)


# ------------------------------------------------------------ learning curves


def _pow3(t, a, b, c, t0=1.0):
    return a - b * (t / t0) ** (-c)


@pytest.mark.parametrize("first_epoch", [1.0, 10.0])
def test_recovers_an_exact_pow3_curve(first_epoch):
    epochs = first_epoch * np.arange(1, 7)
    acc = _pow3(epochs, 0.82, 0.4, 0.7, t0=first_epoch)
    pred, std = learning_curve_extrapolation(epochs, acc, horizon=50 * first_epoch)
    assert pred == pytest.approx(_pow3(50.0, 0.82, 0.4, 0.7), abs=1e-6)
    assert std is not None and std < 1e-4


def test_noisy_curve_prediction_is_close_and_has_uncertainty():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 11)
    acc = _pow3(epochs, 0.75, 0.45, 0.9) + rng.normal(scale=0.005, size=10)
    result = learning_curve_extrapolation(epochs[::-1], acc[::-1], horizon=100)  # order does not matter
    assert result.fitted
    assert result.prediction == pytest.approx(_pow3(100, 0.75, 0.45, 0.9), abs=0.03)
    assert 0 < result.std < 0.1


def test_exactly_three_points_has_undetermined_std():
    epochs = np.array([1.0, 2.0, 4.0])
    pred, std = learning_curve_extrapolation(epochs, _pow3(epochs, 0.9, 0.5, 1.0), horizon=8)
    assert pred == pytest.approx(_pow3(8.0, 0.9, 0.5, 1.0), abs=1e-5)
    assert std == np.inf


def test_fallback_to_last_value():
    result = learning_curve_extrapolation([1, 2], [0.3, 0.5], horizon=10)
    assert result == (0.5, None) and not result.fitted
    # repeated epochs do not count as distinct points
    assert learning_curve_extrapolation([1, 1, 2], [0.3, 0.35, 0.5], horizon=10).std is None
    assert learning_curve_extrapolation([2, 1], [0.5, 0.3], horizon=10).prediction == 0.5  # last by epoch


def test_fallback_when_the_fit_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(baselines, "curve_fit", broken)
    assert learning_curve_extrapolation([1, 2, 3, 4], [0.2, 0.4, 0.5, 0.55], horizon=10) == (0.55, None)


def test_prediction_stays_in_unit_interval():
    epochs = np.arange(1, 8)
    pred, _ = learning_curve_extrapolation(epochs, np.minimum(1.0, 0.6 + 0.07 * epochs), horizon=1000)
    assert 0.0 <= pred <= 1.0


@pytest.mark.parametrize(
    "epochs,acc,horizon,match",
    [
        ([1, 2, 3], [30.0, 50.0, 60.0], 10, "fractions"),
        ([0, 1, 2], [0.1, 0.2, 0.3], 10, "> 0"),
        ([1, 2, 3], [0.1, 0.2], 10, "equal length"),
        ([1, 2, 3], [0.1, np.nan, 0.3], 10, "finite"),
        ([1, 2, 3], [0.1, 0.2, 0.3], 0, "horizon"),
        ([], [], 10, "at least one"),
    ],
)
def test_extrapolation_validation(epochs, acc, horizon, match):
    with pytest.raises(ValueError, match=match):
        learning_curve_extrapolation(epochs, acc, horizon)


# --------------------------------------------------------- successive halving


class FakeTrainer:
    """Deterministic learning curves acc_i(e) = a_i - b_i / (e + 1), with exact epoch bookkeeping."""

    def __init__(self, a, b, resume=True):
        self.a, self.b, self.resume = np.asarray(a, float), np.asarray(b, float), resume
        self.trained = np.zeros(len(a), dtype=int)
        self.epochs_run = 0
        self.calls = []

    def __call__(self, candidate, epochs):
        self.calls.append((candidate, epochs))
        if self.resume:
            assert epochs > self.trained[candidate], "resumed training must move forward"
            self.epochs_run += epochs - self.trained[candidate]
        else:
            self.epochs_run += epochs
        self.trained[candidate] = epochs
        return self.a[candidate] - self.b[candidate] / (epochs + 1)


@pytest.mark.parametrize("resume", [True, False])
def test_budget_accounting_is_exact(resume):
    rng = np.random.default_rng(0)
    trainer = FakeTrainer(rng.uniform(0.5, 0.9, 8), rng.uniform(0.1, 0.4, 8), resume=resume)
    result = successive_halving(list(range(8)), trainer, total_budget=100, eta=2, resume=resume)
    assert result.total_spent == trainer.epochs_run == result.epochs_spent.sum()
    assert result.total_spent <= 100
    assert [len(r["survivors"]) for r in result.rounds] == [8, 4, 2]
    # R = 3 rounds of floor(100 / 3) = 33 epochs, split among 8, 4, 2 survivors
    if resume:
        assert [r["epochs"] for r in result.rounds] == [4, 4 + 8, 4 + 8 + 16]
        assert [r["spent"] for r in result.rounds] == [32, 32, 32]
    else:
        assert [r["epochs"] for r in result.rounds] == [4, 8, 16]
        assert [r["spent"] for r in result.rounds] == [32, 32, 32]
    np.testing.assert_array_equal(result.epochs_reached, trainer.trained)


def test_non_crossing_curves_give_the_true_order():
    a = np.array([0.60, 0.85, 0.70, 0.90, 0.65, 0.80, 0.75])
    trainer = FakeTrainer(a, np.full(7, 0.3))
    result = successive_halving([f"m{i}" for i in range(7)], lambda c, e: trainer(int(c[1:]), e), 7 * 3 * 2)
    assert result.ranking[0] == 3  # the best curve survives
    assert result.ranking == list(np.argsort(-a))
    assert np.argmax(result.scores) == 3
    assert sorted(result.scores) == list(range(1, 8))
    assert [len(r["survivors"]) for r in result.rounds] == [7, 4, 2]


def test_eta_three_and_failed_candidates():
    a = np.linspace(0.5, 0.9, 9)
    trainer = FakeTrainer(a, np.full(9, 0.2))

    def evaluate(c, e):
        return float("nan") if c == 8 else trainer(c, e)  # the best curve crashes

    result = successive_halving(range(9), evaluate, total_budget=36, eta=3)
    assert [len(r["survivors"]) for r in result.rounds] == [9, 3]
    assert result.ranking[0] == 7
    assert result.ranking[-1] == 8
    assert np.isnan(result.last_accuracy[8])


def test_single_candidate_gets_the_whole_budget():
    trainer = FakeTrainer([0.7], [0.2])
    result = successive_halving(["only"], lambda c, e: trainer(0, e), total_budget=5)
    assert result.ranking == [0] and result.total_spent == 5 and trainer.calls == [(0, 5)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"candidates": [], "total_budget": 10}, "empty"),
        ({"candidates": [0, 1, 2, 3], "total_budget": 7}, "too small"),
        ({"candidates": [0, 1], "total_budget": 10, "eta": 1}, "eta"),
    ],
)
def test_successive_halving_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        successive_halving(evaluate=lambda c, e: 0.5, **kwargs)


def test_successive_halving_type_errors():
    with pytest.raises(TypeError, match="integer"):
        successive_halving([0, 1], lambda c, e: 0.5, total_budget=10.5)
    with pytest.raises(TypeError, match="callable"):
        successive_halving([0, 1], "not a function", total_budget=10)


# ------------------------------------------------------------------ static prior


def test_static_prior():
    src = [0.76, 0.81, 0.69]
    out = static_prior(src)
    np.testing.assert_array_equal(out, src)
    assert out.dtype == np.float64
    with pytest.raises(ValueError, match="NaN"):
        static_prior([0.7, np.nan])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        static_prior([])
