import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import BayesianRidge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ncap.capacitance.predictor import (
    CrossRunPredictor,
    p_best,
    predict_final_accuracy,
    rank_order,
    trajectory_features,
)


def test_exact_line_extrapolates_to_intercept():
    beta = np.array([0.5, 0.4, 0.3, 0.25, 0.2])
    acc = 0.9 - 0.6 * beta
    p = predict_final_accuracy(beta, acc, t0=0)
    assert p.method == "beta_extrapolation" and not p.flags
    assert p.accuracy == pytest.approx(0.9, abs=1e-3)
    assert p.slope == pytest.approx(-0.6, rel=1e-2)
    assert p.std < 0.01


def test_matches_plain_bayesian_ridge_on_noisy_data():
    rng = np.random.default_rng(0)
    beta = np.linspace(0.2, 2.0, 8)
    acc = 0.8 - 0.1 * beta + rng.normal(0, 0.01, 8)
    p = predict_final_accuracy(beta, acc, t0=0)
    ref_mean, ref_std = BayesianRidge().fit(beta[:, None], acc).predict([[0.0]], return_std=True)
    assert p.accuracy == pytest.approx(ref_mean[0], abs=2e-3)
    assert p.std == pytest.approx(ref_std[0], rel=0.1)


def test_t0_skips_leading_points():
    beta = np.array([0.5, 0.4, 0.3, 0.2, 0.1])  # β in range; the accuracy at t=0 is off the line
    acc = np.array([0.1, 0.70, 0.75, 0.80, 0.85])  # first point far off the line
    assert predict_final_accuracy(beta, acc, t0=1).accuracy == pytest.approx(0.9, abs=1e-2)
    assert abs(predict_final_accuracy(beta, acc, t0=0).accuracy - 0.9) > 0.05  # the bad point pulls the fit


def test_denominator_crossing_zero_is_dropped():
    beta = np.array([0.5, 0.4, 19.0, 0.25, 0.2, 0.15])  # the spike seen when 1ᵀP1 passed through 0
    den = np.array([1.0, 0.9, 0.001, 0.8, 0.7, 0.7])
    acc = 0.9 - 0.6 * np.where(beta > 1, 0.3, beta)
    p = predict_final_accuracy(beta, acc, t0=0, denominators=den)
    assert any("unstable" in f for f in p.flags) and p.n_points == 5
    assert p.accuracy == pytest.approx(0.9, abs=5e-3)


def test_degenerate_inputs_are_flagged_or_rejected():
    with pytest.raises(ValueError, match="no observations"):
        predict_final_accuracy([], [])
    with pytest.raises(ValueError, match="expected 3"):
        predict_final_accuracy([0.1, 0.2, 0.3], [0.5, 0.6])
    p = predict_final_accuracy([0.3, 0.3, 0.3, 0.3], [0.5, 0.6, 0.62, 0.63], t0=0)
    assert p.method == "fallback_last" and p.accuracy == 0.63 and "constant" in p.flags[0]
    p = predict_final_accuracy([0.3, np.nan, 0.1], [0.5, 0.6, 0.7], t0=0)
    assert p.method == "fallback_last" and any("usable" in f for f in p.flags)
    p = predict_final_accuracy([0.3, 0.2, 0.1], [0.5, 0.9, 1.0], t0=0)
    assert 0 <= p.accuracy <= 1 and any("clipped" in f for f in p.flags)


def test_p_best_and_rank_order():
    probs = p_best([0.9, 0.5, np.nan], [0.01, 0.01, 0.1])
    assert probs[0] == pytest.approx(1.0) and probs[2] == 0
    probs = p_best([0.7, 0.7], [0.05, 0.05])
    assert probs.sum() == pytest.approx(1.0) and abs(probs[0] - 0.5) < 0.02
    assert rank_order([0.2, np.nan, 0.9, 0.5]).tolist() == [3, 4, 1, 2]
    assert rank_order([0.5, np.nan, 0.5, np.nan, 0.7]).tolist() == [2, 4, 3, 5, 1]  # ties: input order


def test_rank_order_agrees_with_argsort_reference():
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = rng.choice([0.1, 0.4, 0.4, 0.9, np.nan], size=rng.integers(1, 10))
        key = np.where(np.isfinite(s), -s, np.inf)
        expected = np.empty(len(s), dtype=int)
        expected[np.argsort(key, kind="stable")] = np.arange(1, len(s) + 1)
        assert rank_order(s).tolist() == expected.tolist()


def _cross_run_data():
    rng = np.random.default_rng(1)
    runs, finals = [], []
    for _ in range(30):
        final = rng.uniform(0.5, 0.95)
        beta = np.linspace(1.0, 0.3, 5) * rng.uniform(0.5, 2)
        acc = final - 0.2 * np.exp(-np.arange(5) / 2) + rng.normal(0, 0.005, 5)
        runs.append(trajectory_features(beta, acc))
        finals.append(final)
    return np.array(runs), np.array(finals)


def test_cross_run_predictor_learns_a_mapping():
    X, y = _cross_run_data()
    model = CrossRunPredictor().fit(X[:20], y[:20])
    mean, std = model.predict(X[20:], return_std=True)
    assert np.corrcoef(mean, y[20:])[0, 1] > 0.95 and (std > 0).all()
    with pytest.raises(NotFittedError, match="not fitted"):
        CrossRunPredictor().predict(X)
    with pytest.raises(ValueError, match="finite"):
        CrossRunPredictor().fit(np.full((4, 6), np.nan), np.ones(4))
    with pytest.raises(ValueError, match="minimum of 3"):
        CrossRunPredictor().fit(X[:2], y[:2])
    with pytest.raises(ValueError, match="6 features"):
        model.predict(X[:, :5])


def test_cross_run_predictor_is_a_scaler_bayesian_ridge_pipeline_and_clones():
    X, y = _cross_run_data()
    X[:, 5] = 5.0  # a constant column: StandardScaler keeps its scale at 1
    ref_mean, ref_std = make_pipeline(StandardScaler(), BayesianRidge()).fit(X[:20], y[:20]).predict(
        X[20:], return_std=True)
    model = CrossRunPredictor().fit(X[:20], y[:20])
    mean, std = model.predict(X[20:], return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(std, ref_std, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X[20:]), ref_mean, rtol=1e-12)
    tuned = CrossRunPredictor(regressor=BayesianRidge(alpha_1=1e-3))
    twin = clone(tuned)
    assert twin is not tuned and twin.get_params()["regressor__alpha_1"] == 1e-3
    assert not hasattr(twin, "pipeline_")  # clone copies parameters, not the fit
    hand_built = make_pipeline(StandardScaler(), BayesianRidge(alpha_1=1e-3)).fit(X[:20], y[:20])
    np.testing.assert_allclose(twin.fit(X[:20], y[:20]).predict(X[20:]), hand_built.predict(X[20:]))
    assert model.score(X[20:], y[20:]) > 0.8  # RegressorMixin's R²


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")  # array-API checks need SCIPY_ARRAY_API
def test_cross_run_predictor_passes_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(CrossRunPredictor(), on_fail=None)
    assert len(results) > 30
    assert [r["check_name"] for r in results if r["status"] == "failed"] == []
