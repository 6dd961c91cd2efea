"""Benchmark rankers on hand-made runs whose right answers are known."""
import numpy as np
import pytest

from ncap.bench import rankers


def fake_run(n_obs=8, per_epoch=4, intercept=0.9, slope=-2.0, name="x", variants=("support", "default")):
    """A run whose accuracy is exactly linear in β_eff: ncap must extrapolate to ``intercept``."""
    epoch = np.arange(1, n_obs + 1) / per_epoch
    beta = 0.2 * np.exp(-epoch)  # decays towards 0, never 0
    acc = intercept + slope * beta
    return {"status": "ok", "candidate": name, "epoch": epoch.tolist(), "val_accuracy": acc.tolist(),
            "train_loss": (1 / epoch).tolist(), "beta_eff": {v: beta.tolist() for v in variants},
            "beta_denominator": {v: np.ones(n_obs).tolist() for v in variants}}


def signal_of(runs, budget=1.0, static=None, full_epochs=2.0):
    static = static or [{"logme": float(i)} for i in range(len(runs))]
    return rankers.Signal(runs, full_runs=runs, static=static, budget_epochs=budget, full_epochs=full_epochs)


@pytest.mark.parametrize("variant,t0,smooth", [("default", 1, "none"), ("support", 0, "median3"), ("magnitude", 2, "mean3")])
def test_ncap_name_round_trip(variant, t0, smooth):
    assert rankers.parse_ncap_name(rankers.ncap_name(variant, t0, smooth)) == (variant, t0, smooth)


def test_truncate_cuts_every_per_observation_list_at_k():
    cut = rankers.truncate(fake_run(), 0.5)
    assert cut["epoch"] == [0.25, 0.5]
    assert len(cut["val_accuracy"]) == len(cut["train_loss"]) == len(cut["beta_eff"]["support"]) == 2
    assert rankers.final_accuracy(cut) == cut["val_accuracy"][-1]
    assert np.isnan(rankers.final_accuracy({**fake_run(), "status": "failed"}))


def test_ncap_extrapolates_to_beta_zero():
    pred = rankers.ncap_prediction(fake_run(), "support", t0=0)
    assert pred.method == "beta_extrapolation"
    assert pred.accuracy == pytest.approx(0.9, abs=2e-3)


def test_smoothing_noisy_beta_reduces_the_attenuation_of_the_extrapolation():
    """Noise on β_eff (the regressor) biases the extrapolation towards the mean accuracy; smoothing over
    neighbouring observations removes part of that noise and of the bias."""
    rng = np.random.default_rng(0)
    base = np.linspace(0.2, 0.02, 12)
    errors = {s: [] for s in rankers.SMOOTHERS}
    for _ in range(100):
        noisy = base * (1 + rng.normal(0, 0.3, 12))
        run = {**fake_run(n_obs=12), "val_accuracy": (0.9 - 2.0 * base).tolist()}
        run["beta_eff"], run["beta_denominator"] = {"support": noisy.tolist()}, {"support": [1.0] * 12}
        for s in rankers.SMOOTHERS:
            errors[s].append(abs(rankers.ncap_prediction(run, "support", t0=0, smooth=s).accuracy - 0.9))
    assert np.mean(errors["median3"]) < 0.7 * np.mean(errors["none"])
    assert np.mean(errors["mean3"]) < 0.7 * np.mean(errors["none"])
    np.testing.assert_array_equal(rankers.smooth_beta(np.arange(5.0), "median3"), np.arange(5.0))
    with pytest.raises(ValueError, match="unknown smoothing"):
        rankers.smooth_beta(np.arange(5.0), "gauss")


def test_few_points_fall_back_and_failed_runs_have_no_score():
    sig = signal_of([fake_run(n_obs=2, name="a"), {**fake_run(name="b"), "status": "failed"}])
    scores, fallback = rankers.ncap_scores(sig, "support", 1, "none")
    assert np.isnan(scores[1]) and fallback == 1.0
    assert scores[0] == pytest.approx(fake_run(n_obs=2)["val_accuracy"][-1])


def test_successive_halving_at_equal_compute_ranks_the_best_final_run_first():
    runs = [fake_run(n_obs=8, intercept=c, name=n) for c, n in ((0.7, "a"), (0.9, "b"), (0.8, "c"), (0.6, "d"))]
    scores = rankers.successive_halving_scores(signal_of(runs, budget=1.0))
    assert np.argmax(scores) == 1 and np.argmin(scores) == 3
    # below one observation interval per candidate and round, halving is undefined
    assert np.isnan(rankers.successive_halving_scores(signal_of(runs, budget=0.25))).all()


def test_combined_features_are_centred_within_the_task_and_the_fit_learns_the_order():
    tasks = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        inter = rng.uniform(0.5, 0.95, 6)
        runs = [fake_run(intercept=c, name=str(i)) for i, c in enumerate(inter)]
        sig = signal_of(runs)
        x = rankers.combined_features(sig)
        np.testing.assert_allclose(np.nanmean(x, axis=0), 0, atol=1e-12)
        tasks.append((x, inter))
    model = rankers.fit_combined(tasks[:2])
    test = signal_of([fake_run(intercept=c, name=str(i)) for i, c in enumerate(tasks[2][1])])
    test.extra["combined_model"] = model
    scores = rankers.combined_scores(test)
    assert np.argsort(scores).tolist() == np.argsort(tasks[2][1]).tolist()
    # the shipped artefact (plain coefficients) scores exactly like the fitted model
    artefact = rankers.combined_artefact(model, {"fitted_on_tasks": ["a", "b"]})
    np.testing.assert_allclose(rankers.artefact_scores(artefact, rankers.combined_features(test)), scores, rtol=1e-10)
    with pytest.raises(ValueError, match="not a combined-predictor artefact"):
        rankers.artefact_scores({**artefact, "features": ["x"]}, rankers.combined_features(test))


def test_score_all_covers_every_peer_and_only_recorded_variants():
    sig = signal_of([fake_run(name=str(i), intercept=0.5 + 0.1 * i) for i in range(4)])
    scores, fallback = rankers.score_all(sig)
    assert set(rankers.PEERS) <= set(scores)
    assert rankers.NCAP_DEFAULT in scores and not any("magnitude" in n for n in scores)
    assert set(fallback) == {n for n in scores if n.startswith("ncap[")}
    assert np.isnan(scores["leep"]).all() and scores["logme"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert np.isnan(scores["combined"]).all()  # nothing fitted


def test_product_settings_name_what_ncap_rank_can_compute():
    from ncap.bench.rankers import NCAP_DEFAULT, product_settings
    from ncap.models.recipe import Recipe

    assert product_settings("val-acc") == {"ranker": "val_acc"} and product_settings("tse-ema") == {"ranker": "tse_ema"}
    assert product_settings(NCAP_DEFAULT) == {"ranker": "beta_eff", "variant": "support", "t0": 1}
    for name in ("successive-halving", "combined", "logme", "curve-extrapolation", "ncap[support,t0=1,smooth=median3]"):
        assert product_settings(name) is None, name
    for name in ("val-acc", "tse-ema", "ncap[default,t0=2,smooth=none]"):
        Recipe(**product_settings(name))  # valid settings of the recipe
