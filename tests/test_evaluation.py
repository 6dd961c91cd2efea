"""Ranking metrics: hand-computed examples, SciPy itself and a brute-force weighted tau."""

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats

from ncap.bench.evaluation import (
    kendall,
    ranking_report,
    spearman,
    top1_regret,
    topk_recall,
    weighted_tau,
)


def _vigna_weighted_tau_no_ties(x, y, importance):
    """Additive hyperbolic weighted tau for tie-free x, y with a given importance order."""
    rank = np.empty(len(x), dtype=int)
    rank[importance] = np.arange(len(x))
    num = den = 0.0
    for i, j in itertools.combinations(range(len(x)), 2):
        w = 1.0 / (rank[i] + 1) + 1.0 / (rank[j] + 1)
        num += w * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        den += w
    return num / den


def test_hand_computed_small_example():
    scores, truth = [3.0, 2.0, 1.0], [0.2, 0.3, 0.1]
    # pairs (0,1) discordant, (0,2) and (1,2) concordant
    assert kendall(scores, truth) == pytest.approx(1 / 3)
    # rank differences 1, 1, 0 -> 1 - 6 * 2 / (3 * 8)
    assert spearman(scores, truth) == pytest.approx(0.5)
    # importance by score: weights 1+1/2 (disc.), 1+1/3, 1/2+1/3 -> (-3/2 + 4/3 + 5/6) / (11/3)
    # by truth the weights of the three pairs are 3/2 (disc.), 5/6, 4/3: same value.
    assert weighted_tau(scores, truth) == pytest.approx(2 / 11)
    assert top1_regret(scores, truth) == pytest.approx(0.1)
    assert topk_recall(scores, truth, 1) == 0.0
    assert topk_recall(scores, truth, 2) == 1.0


def test_perfect_and_reversed():
    truth = np.array([0.1, 0.5, 0.3, 0.9])
    for fn in (spearman, kendall, weighted_tau):
        assert fn(truth * 10, truth) == pytest.approx(1.0)
        assert fn(-truth, truth) == pytest.approx(-1.0)
    assert top1_regret(truth, truth) == 0.0
    assert top1_regret(-truth, truth) == pytest.approx(0.8)


def test_agrees_with_scipy_on_random_inputs_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 15))
        scores = rng.integers(0, 4, size=n).astype(float)  # many ties
        truth = rng.normal(size=n)
        if np.all(scores == scores[0]):
            continue
        assert spearman(scores, truth) == pytest.approx(stats.spearmanr(scores, truth).statistic, abs=1e-12)
        assert kendall(scores, truth) == pytest.approx(stats.kendalltau(scores, truth).statistic, abs=1e-12)
        assert weighted_tau(scores, truth) == pytest.approx(
            stats.weightedtau(scores, truth).statistic, abs=1e-12
        )


def test_weighted_tau_is_the_average_of_both_importance_orders():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(4, 9))
        scores, truth = rng.permutation(n).astype(float), rng.normal(size=n)
        by_score = _vigna_weighted_tau_no_ties(scores, truth, np.argsort(-scores))
        by_truth = _vigna_weighted_tau_no_ties(scores, truth, np.argsort(-truth))
        assert weighted_tau(scores, truth) == pytest.approx((by_score + by_truth) / 2, abs=1e-12)
        # hence symmetric in its arguments
        assert weighted_tau(truth, scores) == pytest.approx(weighted_tau(scores, truth), abs=1e-12)


def test_weighted_tau_emphasises_the_top():
    truth = np.arange(8, 0, -1, dtype=float)
    swap_top = truth.copy()
    swap_top[[0, 1]] = swap_top[[1, 0]]
    swap_bottom = truth.copy()
    swap_bottom[[6, 7]] = swap_bottom[[7, 6]]
    assert kendall(swap_top, truth) == pytest.approx(kendall(swap_bottom, truth))
    assert weighted_tau(swap_top, truth) < weighted_tau(swap_bottom, truth)


def test_nan_scores_rank_last():
    scores = np.array([0.3, np.nan, 0.9, 0.1, np.nan])
    truth = np.array([0.5, 0.6, 0.7, 0.2, 0.1])
    as_lowest = np.where(np.isnan(scores), -1.0, scores)  # NaNs tied below everything
    for fn in (spearman, kendall, weighted_tau, top1_regret):
        assert fn(scores, truth) == pytest.approx(fn(as_lowest, truth))
    assert top1_regret([np.nan, 0.1], [0.9, 0.5]) == pytest.approx(0.4)
    # all failed: every candidate tied, the worst one is assumed picked
    assert top1_regret([np.nan] * 3, [0.2, 0.9, 0.4]) == pytest.approx(0.7)
    report = ranking_report(scores, truth)
    assert report["n_failed"] == 2 and report["n_candidates"] == 5


def test_top1_regret_ties_take_the_worst():
    scores = [0.1, 0.9, 0.9, 0.2]
    truth = [0.8, 0.7, 0.5, 0.9]
    assert top1_regret(scores, truth) == pytest.approx(0.4)
    assert topk_recall(scores, truth, 1) == 0.0


def test_topk_recall_hand_example():
    truth = [0.9, 0.8, 0.7, 0.6, 0.5]
    scores = [5, 1, 4, 2, 3]  # predicted top-3 = {0, 2, 4}; true top-3 = {0, 1, 2}
    assert topk_recall(scores, truth, 3) == pytest.approx(2 / 3)
    assert topk_recall(scores, truth, 5) == 1.0
    # ties in truth at the cut: both 0.8s count as relevant for k = 2
    assert topk_recall([3, 1, 2], [0.9, 0.8, 0.8], 2) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        topk_recall(scores, truth, 0)
    with pytest.raises(ValueError, match="k must be"):
        topk_recall(scores, truth, 6)


def test_constant_input_gives_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (spearman, kendall, weighted_tau):
            assert np.isnan(fn([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))
            assert np.isnan(fn([np.nan, np.nan], [0.1, 0.2]))
            assert np.isnan(fn([1.0, 2.0], [0.5, 0.5]))


def test_report_contents():
    scores, truth = [0.2, 0.1, 0.4, 0.3], [0.6, 0.5, 0.8, 0.9]
    report = ranking_report(scores, truth, ks=(1, 3, 10))
    assert report["spearman"] == pytest.approx(spearman(scores, truth))
    assert report["kendall"] == pytest.approx(kendall(scores, truth))
    assert report["weighted_tau"] == pytest.approx(weighted_tau(scores, truth))
    assert report["top1_regret"] == pytest.approx(0.1)
    assert report["top3_recall"] == pytest.approx(topk_recall(scores, truth, 3))
    assert np.isnan(report["top10_recall"])


@pytest.mark.parametrize(
    "scores,truth,match",
    [
        ([0.5], [0.5], "at least 2"),
        ([0.5, 0.4], [0.5], "mismatched"),
        ([0.5, 0.4], [0.5, np.nan], "truth contains"),
        ([[0.5, 0.4]], [[0.5, 0.3]], "1-D"),
    ],
)
def test_validation(scores, truth, match):
    for fn in (spearman, kendall, weighted_tau, top1_regret, ranking_report):
        with pytest.raises(ValueError, match=match):
            fn(scores, truth)
