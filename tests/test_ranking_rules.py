"""The ranking rules `ncap rank` can rank by (capacitance/ranking_rules.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.capacitance.ranking_rules import RANKING_RULES, score_run, tse_ema

RUN = {"beta_eff": [4.0, 3.1, 2.5, 2.0, 1.6], "val_accuracy": [0.42, 0.55, 0.61, 0.66, 0.70],
       "train_loss": [2.1, 1.6, 1.3, 1.1, 1.0], "beta_denominator": [1.0, 1.1, 1.2, 1.2, 1.3]}


def test_val_acc_is_the_last_accuracy_with_its_binomial_standard_error():
    s = score_run("val_acc", **RUN, n_val=500)
    assert s.score == 0.70
    assert s.std == pytest.approx(binom.std(500, 0.70) / 500)  # scipy's binomial: the independent reference


def test_tse_ema_rule_scores_the_observed_losses():
    s = score_run("tse_ema", **RUN)
    assert s.score == pytest.approx(-sum(0.9 ** (4 - t) * loss for t, loss in enumerate(RUN["train_loss"])))
    assert math.isnan(s.std)


@pytest.mark.parametrize("t0", [0, 1, 2])
def test_beta_eff_rule_is_algorithm_1_with_the_runs_t0_and_denominators(t0):
    s = score_run("beta_eff", **RUN, t0=t0)
    p = predict_final_accuracy(RUN["beta_eff"], RUN["val_accuracy"], t0=t0, denominators=RUN["beta_denominator"])
    assert (s.score, s.std, s.method) == (p.accuracy, p.std, p.method)


def test_faster_training_and_higher_accuracy_rank_first():
    slow = {**RUN, "val_accuracy": [0.3, 0.35, 0.4, 0.42, 0.45], "train_loss": [2.2, 2.0, 1.9, 1.8, 1.7]}
    for rule in ("val_acc", "tse_ema"):
        assert score_run(rule, **RUN).score > score_run(rule, **slow).score, rule


def test_unknown_rule_and_empty_run():
    with pytest.raises(ValueError, match="unknown ranking rule 'x'; choose from beta_eff, val_acc, tse_ema"):
        score_run("x", **RUN)
    for rule in RANKING_RULES:
        assert np.isnan(score_run(rule, beta_eff=[], val_accuracy=[], train_loss=[]).score)


def test_bench_uses_the_same_tse_ema():
    from ncap.bench import baselines

    assert baselines.tse_ema is tse_ema


def test_the_rule_is_a_job_setting_that_leaves_cached_runs_valid():
    from ncap.bench.runs import BenchRecipe
    from ncap.models.recipe import Recipe

    assert Recipe(ranker="val_acc").ranker == "val_acc"
    with pytest.raises(ValueError, match="ranker"):
        Recipe(ranker="nope")
    assert BenchRecipe(Recipe(ranker="tse_ema")).key() == BenchRecipe(Recipe()).key()
    assert BenchRecipe(Recipe(t0=2)).key() != BenchRecipe(Recipe()).key()
