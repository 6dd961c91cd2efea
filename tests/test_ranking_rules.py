"""The ranking rules `ncap rank` can rank by (capacitance/ranking_rules.py): one registry for the product and
the benchmark."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.capacitance.ranking_rules import (
    RANKING_RULES,
    RankingRule,
    RuleScore,
    rank_scores,
    register_rule,
    score_run,
    tse_ema,
)

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


def _half_acc(beta, denominators, accuracy, losses, n_val, t0):
    return RuleScore(float(accuracy[-1]) / 2, method="half_last_accuracy")


@pytest.fixture
def half_acc():
    """A rule registered for one test (half the last accuracy, no std), removed after it."""
    rule = register_rule(RankingRule("half_acc", _half_acc, "half the last validation accuracy",
                                     "half the last accuracy", "half acc", has_std=False))
    yield rule
    del RANKING_RULES[rule.name]
    from ncap.models.recipe import Recipe

    with pytest.raises(ValueError, match="unknown ranker 'half_acc'"):
        Recipe(ranker="half_acc")  # gone again: the choices are read when used


def _bench_run(acc):
    n = len(acc)
    return {"status": "ok", "epoch": [0.5 * (i + 1) for i in range(n)], "val_accuracy": acc,
            "train_loss": [2.0 - a for a in acc], "beta_eff": {"support": [3.0 - i for i in range(n)]},
            "beta_denominator": {"support": [1.0] * n}}


def test_registering_a_rule_is_one_edit(half_acc, capsys):
    """One registration, after every import: the rule is a choice of `ncap rank --ranker` (its help lists it and
    the parsed recipe takes it), of the job config (its JSON schema's enum, what /catalog serves the web form)
    and of the recipe; the benchmark scores it; the table shows its score by its metadata."""
    from ncap.bench import rankers
    from ncap.service.api import JobConfig
    from ncap.service.cli import build_parser
    from ncap.service.commands.recipe_flags import recipe_from_args

    with pytest.raises(SystemExit):
        build_parser().parse_args(["rank", "--help"])
    assert "half_acc = half the last validation accuracy" in " ".join(capsys.readouterr().out.split())
    assert recipe_from_args(build_parser().parse_args(["rank", "--ranker", "half_acc"])).ranker == "half_acc"

    schema = JobConfig.model_json_schema()["properties"]["ranker"]
    assert schema["enum"] == ["beta_eff", "val_acc", "tse_ema", "half_acc"]
    assert "half_acc = half the last validation accuracy" in schema["description"]
    assert JobConfig(ranker="half_acc").ranker == "half_acc"

    runs = [_bench_run([0.4, 0.5, 0.6, 0.7]), _bench_run([0.5, 0.6, 0.6, 0.62]),
            {**_bench_run([0.5]), "status": "failed"}]
    scores, _ = rankers.score_all(rankers.Signal(runs, runs, [{}] * 3, budget_epochs=2.0, full_epochs=2.0))
    np.testing.assert_array_equal(scores["half_acc"], [0.35, 0.31, np.nan])
    assert "half_acc" in rankers.peers() and rankers.product_settings("half_acc") == {"ranker": "half_acc"}

    from ncap.models.recipe import Recipe
    from ncap.service.documents import CandidateRecord, DatasetInfo, RankingDocument
    from ncap.service.ranking import rank_runs
    from ncap.service.tables import format_table

    records = [CandidateRecord(candidate=str(i), val_accuracy=r["val_accuracy"], train_loss=r["train_loss"],
                               beta_eff=r["beta_eff"]["support"]) for i, r in enumerate(runs[:2])]
    doc = RankingDocument(candidates=rank_runs(records, ranker="half_acc"), config=Recipe(ranker="half_acc"),
                          dataset=DatasetInfo(source="x", n_images=4, n_train=2, n_val=2, classes=["a", "b"]))
    header, _, first = format_table(doc).splitlines()[:3]
    assert "ranked by: half acc" in header and first.split()[:3] == ["1", "0", "35.0"]  # in %, no ± (no std)
    assert all(r.p_best is None for r in doc.candidates)


def test_a_rule_has_one_name_spelled_one_way():
    with pytest.raises(ValueError, match="lower case and underscores"):
        register_rule(RankingRule("val-acc", _half_acc, "x", "x", None))
    with pytest.raises(ValueError, match="already registered"):
        register_rule(RankingRule("val_acc", _half_acc, "x", "x", None))
    assert RANKING_RULES["val_acc"].score is not _half_acc


def test_rank_scores_ranks_nan_last_and_gives_p_best_only_with_every_std():
    ranks, probs = rank_scores([0.5, np.nan, 0.9, 0.7], [0.01, np.nan, 0.01, 0.01])
    assert ranks.tolist() == [3, 4, 1, 2]
    assert probs[2] > 0.99 and probs[1] == 0 and probs.sum() == pytest.approx(1.0)
    _, probs = rank_scores([0.5, 0.9], [0.01, np.nan])  # a scored candidate without a std: no P(best)
    assert np.isnan(probs).all()


def test_predict_ranks_as_ncap_rank_ranks_by_beta_eff():
    """/predict and `ncap rank --ranker beta_eff` give the same ranks and P(best) for the same trajectories."""
    from ncap.service.api import NcapService, Trajectory
    from ncap.service.documents import CandidateRecord
    from ncap.service.ranking import rank_runs

    rng = np.random.default_rng(0)
    runs = {f"c{i}": (list(3.0 * np.exp(-0.3 * (i + 1) * np.arange(1, 7)) + rng.normal(0, 0.05, 6)),
                      list(0.5 + 0.04 * i * (1 - np.exp(-np.arange(1, 7) / 3)) + rng.normal(0, 0.01, 6)))
            for i in range(4)}
    response = NcapService.inner.predict.func(  # the endpoint's own function, without a server
        None, [Trajectory(name=n, beta_eff=b, val_accuracy=a) for n, (b, a) in runs.items()], t0=1, min_points=3)
    records = [CandidateRecord(candidate=n, beta_eff=b, val_accuracy=a, train_loss=[1.0] * 6)
               for n, (b, a) in runs.items()]
    ranked = {r.candidate: r for r in rank_runs(records, ranker="beta_eff", t0=1)}
    got = {p.name: (p.rank, p.predicted_accuracy, p.p_best) for p in response.predictions}
    assert got == {n: (r.rank, r.score, r.p_best) for n, r in ranked.items()}
    assert sorted(p.rank for p in response.predictions) == [1, 2, 3, 4]
    assert 0 < max(p.p_best for p in response.predictions) < 1  # a draw, not a foregone P(best)
