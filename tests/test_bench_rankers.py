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
def test_configuration_name_round_trip(variant, t0, smooth):
    name = rankers.configuration_name("beta_eff", variant, t0, smooth)
    assert name == f"beta_eff[{variant},t0={t0},smooth={smooth}]" and rankers.is_configuration(name)
    assert rankers.parse_configuration(name) == ("beta_eff", variant, t0, smooth)
    assert not rankers.is_configuration("successive_halving[eta=3]") and not rankers.is_configuration("val_acc")


def test_truncate_cuts_every_per_observation_list_at_k():
    cut = rankers.truncate(fake_run(), 0.5)
    assert cut["epoch"] == [0.25, 0.5]
    assert len(cut["val_accuracy"]) == len(cut["train_loss"]) == len(cut["beta_eff"]["support"]) == 2
    assert rankers.final_accuracy(cut) == cut["val_accuracy"][-1]
    assert np.isnan(rankers.final_accuracy({**fake_run(), "status": "failed"}))


def test_beta_eff_extrapolates_to_beta_zero():
    pred = rankers.configuration_score(fake_run(), "beta_eff[support,t0=0,smooth=none]")
    assert pred.method == "beta_extrapolation"
    assert pred.score == pytest.approx(0.9, abs=2e-3)


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
            name = rankers.configuration_name("beta_eff", "support", 0, s)
            errors[s].append(abs(rankers.configuration_score(run, name).score - 0.9))
    assert np.mean(errors["median3"]) < 0.7 * np.mean(errors["none"])
    assert np.mean(errors["mean3"]) < 0.7 * np.mean(errors["none"])
    np.testing.assert_array_equal(rankers.smooth_beta(np.arange(5.0), "median3"), np.arange(5.0))
    with pytest.raises(ValueError, match="unknown smoothing"):
        rankers.smooth_beta(np.arange(5.0), "gauss")


def test_few_points_fall_back_and_failed_runs_have_no_score():
    sig = signal_of([fake_run(n_obs=2, name="a"), {**fake_run(name="b"), "status": "failed"}])
    scores, fallback = rankers.configuration_scores(sig, rankers.NCAP_DEFAULT)
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
    assert set(rankers.peers()) <= set(scores) and {"val_acc", "tse_ema"} <= set(rankers.peers())
    assert rankers.NCAP_DEFAULT in scores and not any("magnitude" in n for n in scores)
    assert set(fallback) == {n for n in scores if n.startswith("beta_eff[")}
    assert np.isnan(scores["leep"]).all() and scores["logme"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert np.isnan(scores["combined"]).all()  # nothing fitted


def test_product_settings_name_what_ncap_rank_can_compute():
    from ncap.bench.rankers import NCAP_DEFAULT, product_settings
    from ncap.models.recipe import Recipe

    assert product_settings("val_acc") == {"ranker": "val_acc"}
    assert product_settings("tse_ema") == {"ranker": "tse_ema"}
    assert product_settings(NCAP_DEFAULT) == {"ranker": "beta_eff", "variant": "support", "t0": 1}
    for name in ("successive_halving", "combined", "logme", "curve_extrapolation",
                 "beta_eff[support,t0=1,smooth=median3]", "val-acc"):  # the old spelling is no product name
        assert product_settings(name) is None, name
    for name in ("val_acc", "tse_ema", "beta_eff[default,t0=2,smooth=none]"):
        Recipe(**product_settings(name))  # valid settings of the recipe


def test_the_benchmark_scores_through_the_products_rule_functions(monkeypatch):
    """Replacing a product rule's function changes what the benchmark scores: it has no copy of its own."""
    from dataclasses import replace

    from ncap.capacitance.ranking_rules import RANKING_RULES, RuleScore

    sig = signal_of([fake_run(name=str(i), intercept=0.5 + 0.1 * i) for i in range(3)])
    before, _ = rankers.score_all(sig)
    np.testing.assert_array_equal(before["val_acc"], [r["val_accuracy"][-1] for r in sig.trajectories])
    for rule, value in (("val_acc", 2.0), ("beta_eff", 3.0)):
        monkeypatch.setitem(RANKING_RULES, rule, replace(RANKING_RULES[rule], score=lambda *a, v=value: RuleScore(v)))
    after, _ = rankers.score_all(sig)
    assert (after["val_acc"] == 2.0).all() and (after[rankers.NCAP_DEFAULT] == 3.0).all()
    assert all((after[n] == 3.0).all() for n in after if rankers.is_configuration(n))
    np.testing.assert_array_equal(after["tse_ema"], before["tse_ema"])


def test_old_spellings_are_read_as_todays_names():
    old = ["val-acc", "tse-ema", "h-score", "source-accuracy", "successive-halving[eta=3]",
           "ncap[support,t0=1,smooth=none]", "val_acc", "logme"]
    assert [rankers.current_name(n) for n in old] == [
        "val_acc", "tse_ema", "h_score", "source_accuracy", "successive_halving[eta=3]", rankers.NCAP_DEFAULT,
        "val_acc", "logme"]
    runs = [fake_run(name="a"), fake_run(name="b")]
    sig = signal_of(runs, static=[{"h-score": 1.0, "source-accuracy": 0.5},  # a record written before
                                  {"h_score": 2.0, "source_accuracy": None}])
    np.testing.assert_array_equal(rankers.static_scores(sig, "h_score"), [1.0, 2.0])
    np.testing.assert_array_equal(rankers.static_scores(sig, "source_accuracy"), [0.5, np.nan])
