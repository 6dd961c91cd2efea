"""Statistics of the selection benchmark: bootstrap intervals on known cases, win/tie/loss counting."""
import numpy as np
import pytest
from scipy import stats

from ncap.bench.statistics import bootstrap_interval, metric_values, paired_counts, summarise


def perfect_pairs(n_tasks=5, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(t + 0.0, t) for t in (rng.permutation(n) / n for _ in range(n_tasks))]


def test_a_perfect_ranker_has_a_degenerate_interval_at_one_and_zero_regret():
    pairs = perfect_pairs()
    for metric, value in (("rho", 1.0), ("tau_w", 1.0), ("regret", 0.0)):
        lo, hi = bootstrap_interval(metric, pairs, n_boot=200)
        assert lo == pytest.approx(value) and hi == pytest.approx(value)
    s = summarise(pairs, n_boot=100)
    assert s["rho"] == 1.0 and s["regret"] == 0.0 and s["n_tasks"] == 5


def test_task_level_interval_matches_scipy_percentile_bootstrap_of_the_mean():
    """Resampling tasks only, the interval is the percentile bootstrap of the mean of the per-task ρ."""
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(12):
        truth = rng.random(10)
        pairs.append((truth + rng.normal(0, rng.uniform(0.05, 0.6), 10), truth))
    per_task = np.array([metric_values(s, t)["rho"] for s, t in pairs])
    lo, hi = bootstrap_interval("rho", pairs, n_boot=4000, resample_candidates=False, seed=3)
    ref = stats.bootstrap((per_task,), np.mean, n_resamples=4000, method="percentile", random_state=3).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)
    assert lo < per_task.mean() < hi


def test_resampling_candidates_widens_the_interval():
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(6):
        truth = rng.random(12)
        pairs.append((truth + rng.normal(0, 0.3, 12), truth))
    lo_t, hi_t = bootstrap_interval("rho", pairs, n_boot=1000, resample_candidates=False)
    lo_c, hi_c = bootstrap_interval("rho", pairs, n_boot=1000, resample_candidates=True)
    assert hi_c - lo_c > hi_t - lo_t


def test_regret_is_in_points_and_a_reversed_ranker_loses_the_whole_spread():
    truth = np.array([0.5, 0.6, 0.9])
    m = metric_values(-truth, truth)
    assert m["rho"] == pytest.approx(-1.0) and m["regret"] == pytest.approx(40.0)
    assert np.isnan(metric_values(np.full(3, np.nan), truth)["rho"])


def test_paired_counts_win_tie_loss_with_tolerance_and_missing_values():
    a = [0.9, 0.5, 0.71, np.nan, 0.2]
    b = [0.8, 0.6, 0.70, 0.5, 0.2]
    assert paired_counts(a, b, tol=0.02) == {"win": 1, "tie": 2, "loss": 1, "n/a": 1}
    assert paired_counts(a, b) == {"win": 2, "tie": 1, "loss": 1, "n/a": 1}
    # lower is better (regret): the smaller value wins
    assert paired_counts([0.0, 2.0], [1.0, 1.0], higher_is_better=False) == {"win": 1, "tie": 0, "loss": 1, "n/a": 0}
    with pytest.raises(ValueError):
        paired_counts([1.0], [1.0, 2.0])
