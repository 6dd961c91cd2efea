"""Benchmark v3's decisive-pair scoring against independent references (scipy's Welch test and Kendall τ-b)."""
import itertools

import numpy as np
import pytest
from scipy import stats

from ncap.bench.decisive import (
    decisive_pairs,
    dpa,
    dpa_interval,
    kendall_tau_b_banded,
    p_pick_best,
    pick_within_noise,
    reliability,
    top1_regret,
)


@pytest.fixture()
def seeds():
    rng = np.random.default_rng(3)
    means = np.array([0.70, 0.71, 0.75, 0.80, 0.80, 0.60, 0.90])
    return means[:, None] + rng.normal(0, 0.01, (len(means), 5))


def test_decisive_pairs_are_welchs_test_at_5_percent(seeds):
    expected = [(i, j) for i, j in itertools.combinations(range(len(seeds)), 2)
                if stats.ttest_ind(seeds[i], seeds[j], equal_var=False).pvalue < 0.05]
    assert decisive_pairs(seeds) == expected
    assert (3, 4) not in expected and (0, 6) in expected  # a genuine tie is not decisive; a clear gap is


def test_dpa_counts_decisive_pairs_and_half_for_tied_scores(seeds):
    m = seeds.mean(1)
    pairs = decisive_pairs(seeds)
    assert dpa(m, seeds) == (1.0, len(pairs))
    assert dpa(-m, seeds) == (0.0, len(pairs))
    assert dpa(np.zeros(len(m)), seeds)[0] == 0.5
    swapped = m.copy()
    swapped[[2, 5]] = swapped[[5, 2]]  # one wrong decision among the decisive pairs involving 2 and 5
    wrong = sum((swapped[i] > swapped[j]) != (m[i] > m[j]) for i, j in pairs)
    assert dpa(swapped, seeds)[0] == pytest.approx(1 - wrong / len(pairs))
    lo, hi = dpa_interval(swapped, seeds, n_boot=300)
    assert lo <= dpa(swapped, seeds)[0] <= hi
    nan_scores = m.copy()
    nan_scores[6] = np.nan  # no score: ranked last, so every decisive pair with the best is wrong
    assert dpa(nan_scores, seeds)[0] < 1.0


def test_regret_pick_and_p_best(seeds):
    m = seeds.mean(1)
    assert top1_regret(m, seeds) == (0.0, 0.0)
    points, sds = top1_regret(-m, seeds)  # picks the worst (0.60) instead of the best (0.90)
    assert points == pytest.approx(100 * (m.max() - m.min()))
    assert sds == pytest.approx((m.max() - m.min()) / np.sqrt(seeds.var(1, ddof=1).mean()))
    assert p_pick_best(m, seeds, n_boot=200) == 1.0 and p_pick_best(-m, seeds, n_boot=200) == 0.0
    tie = np.array([[0.8, 0.81, 0.79, 0.8], [0.8, 0.79, 0.81, 0.8]])
    assert 0.2 < p_pick_best([1, 0], tie, n_boot=400) < 0.8
    assert pick_within_noise([0, 1], tie) and pick_within_noise(m, seeds) and not pick_within_noise(-m, seeds)


def test_tau_b_is_scipys_when_every_pair_is_decisive_and_counts_non_decisive_pairs_as_ties(seeds):
    clear = np.array([0.1, 0.3, 0.5, 0.7, 0.9])[:, None] + np.array([0.0, 0.01, -0.01, 0.005])
    scores = np.array([0.2, 0.1, 0.5, 0.9, 0.8])
    assert len(decisive_pairs(clear)) == 10
    assert kendall_tau_b_banded(scores, clear) == pytest.approx(stats.kendalltau(scores, clear.mean(1)).statistic)
    m = seeds.mean(1)
    every = set(itertools.combinations(range(len(m)), 2))
    assert every - set(decisive_pairs(seeds)) == {(0, 1), (3, 4)}
    banded = m.copy()
    banded[1], banded[4] = banded[0], banded[3]  # the truth's two ties, as scipy sees them
    assert kendall_tau_b_banded(m, seeds) == pytest.approx(stats.kendalltau(m, banded).statistic)


def test_reliability_is_spearman_brown_of_the_mean_seed_pair_correlation(seeds):
    k = seeds.shape[1]
    r = np.mean([np.corrcoef(seeds[:, a], seeds[:, b])[0, 1] for a, b in itertools.combinations(range(k), 2)])
    assert reliability(seeds) == pytest.approx(k * r / (1 + (k - 1) * r))
    noise = np.random.default_rng(0).normal(0, 1, (12, 5))
    assert reliability(noise) < 0.6 < reliability(seeds)
