"""Benchmark v3's scoring: how often a ranker orders the candidate pairs whose truth is decided.

The truth of one task is a matrix ``seeds`` (n_candidates, n_seeds) of final validation accuracies. A pair
(i, j) is **decisive** when its means differ by more than the two-sided 97.5 % t-quantile times the Welch
standard error::

    |m_i − m_j| > t_{0.975, ν} · sqrt(s_i²/k_i + s_j²/k_j)        s: SD over seeds (ddof = 1)
    ν = (s_i²/k_i + s_j²/k_j)² / ((s_i²/k_i)²/(k_i − 1) + (s_j²/k_j)²/(k_j − 1))   (Welch–Satterthwaite)

(a pair with zero variance on both sides is decisive when its means differ). Ties between non-decisive
candidates do not matter for picking a model, so they are not scored.

* **DPA** (decisive-pair accuracy): the share of decisive pairs a ranker orders as the truth does; a tied
  score counts ½, a missing score (NaN) is ranked last. Its interval is a percentile bootstrap over
  candidates (pairs of a drawn candidate set; duplicates dropped).
* **top-1 regret**: best true mean − the true mean of the ranker's pick, in points and in seed SDs (the
  pooled within-candidate SD).
* **P(pick is best)**: over seed bootstraps of the truth (each candidate's seeds resampled), the share in which
  the ranker's pick has the best mean.
* **pick within noise**: the pick and the truth's best are not a decisive pair.
* **Kendall τ-b** against the tie-banded truth: non-decisive pairs are ties of the truth.
* **reliability** of the seed mean (Spearman–Brown): the mean Pearson correlation r over candidates between two
  seeds, stepped up to k seeds, k r / (1 + (k − 1) r).

Written here because no library scores rankings on Welch-decisive pairs; the pieces (t quantiles, Pearson)
come from scipy and numpy.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

__all__ = ["decisive_pairs", "dpa", "dpa_interval", "kendall_tau_b_banded", "p_pick_best", "pick_within_noise",
           "reliability", "top1_regret"]


def _moments(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seeds = np.asarray(seeds, float)
    if seeds.ndim != 2 or seeds.shape[1] < 2:
        raise ValueError(f"seeds must be (n_candidates, n_seeds >= 2), got shape {seeds.shape}")
    k = np.isfinite(seeds).sum(axis=1).astype(float)
    return np.nanmean(seeds, axis=1), np.nanvar(seeds, axis=1, ddof=1), k


def decisive_pairs(seeds) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose means differ by more than their Welch interval (module docstring).

    seeds : (n_candidates, n_seeds) final accuracies; NaN = a missing seed
    """
    m, v, k = _moments(seeds)
    out = []
    for i, j in itertools.combinations(range(len(m)), 2):
        a, b = v[i] / k[i], v[j] / k[j]
        se2 = a + b
        if se2 == 0:
            if m[i] != m[j]:
                out.append((i, j))
            continue
        nu = se2**2 / ((a**2 / (k[i] - 1) if a else 0.0) + (b**2 / (k[j] - 1) if b else 0.0))
        if abs(m[i] - m[j]) > stats.t.ppf(0.975, nu) * np.sqrt(se2):
            out.append((i, j))
    return out


def _pair_credit(scores: np.ndarray, means: np.ndarray, i: int, j: int) -> float:
    si, sj = scores[i], scores[j]
    si = -np.inf if np.isnan(si) else si
    sj = -np.inf if np.isnan(sj) else sj
    if si == sj:
        return 0.5
    return float((si > sj) == (means[i] > means[j]))


def dpa(scores, seeds, pairs: list[tuple[int, int]] | None = None) -> tuple[float, int]:
    """(DPA, number of decisive pairs); DPA is NaN when there is none.

    scores : (n_candidates,) higher = predicted better, NaN = no score
    """
    s, (m, _, _) = np.asarray(scores, float), _moments(seeds)
    pairs = decisive_pairs(seeds) if pairs is None else pairs
    if not pairs:
        return float("nan"), 0
    return float(np.mean([_pair_credit(s, m, i, j) for i, j in pairs])), len(pairs)


def dpa_interval(scores, seeds, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of DPA over candidates: each replicate draws candidates with replacement and
    scores the decisive pairs among the distinct drawn ones."""
    s, (m, _, _) = np.asarray(scores, float), _moments(seeds)
    pairs = decisive_pairs(seeds)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        drawn = set(rng.integers(0, len(m), len(m)).tolist())
        sub = [(i, j) for i, j in pairs if i in drawn and j in drawn]
        if sub:
            vals.append(np.mean([_pair_credit(s, m, i, j) for i, j in sub]))
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _pick(scores: np.ndarray) -> int:
    s = np.where(np.isnan(scores), -np.inf, scores)
    return int(np.argmax(s))


def top1_regret(scores, seeds) -> tuple[float, float]:
    """(regret in accuracy points, regret in pooled seed SDs) of the ranker's pick."""
    m, v, _ = _moments(seeds)
    regret = float(np.max(m) - m[_pick(np.asarray(scores, float))])
    sd = float(np.sqrt(np.nanmean(v)))
    return 100.0 * regret, regret / sd if sd > 0 else float("inf") if regret > 0 else 0.0


def p_pick_best(scores, seeds, *, n_boot: int = 1000, seed: int = 0) -> float:
    """P(the ranker's pick has the best mean), over seed bootstraps of the truth."""
    x = np.asarray(seeds, float)
    pick = _pick(np.asarray(scores, float))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_boot):
        idx = rng.integers(0, x.shape[1], x.shape)
        means = np.nanmean(np.take_along_axis(x, idx, axis=1), axis=1)
        hits += int(means[pick] >= np.nanmax(means))
    return hits / n_boot


def pick_within_noise(scores, seeds) -> bool:
    """True when the pick is the truth's best or not decisively worse than it."""
    m, _, _ = _moments(seeds)
    pick, best = _pick(np.asarray(scores, float)), int(np.argmax(m))
    return pick == best or (min(pick, best), max(pick, best)) not in set(decisive_pairs(seeds))


def kendall_tau_b_banded(scores, seeds) -> float:
    """Kendall's τ-b between the scores and the truth's means, non-decisive pairs counted as ties of the truth."""
    s = np.asarray(scores, float)
    s = np.where(np.isnan(s), -np.inf, s)
    m, _, _ = _moments(seeds)
    decisive = set(decisive_pairs(seeds))
    concordant = discordant = ties_truth = ties_score = 0
    for i, j in itertools.combinations(range(len(m)), 2):
        t_tie, s_tie = (i, j) not in decisive, s[i] == s[j]
        ties_truth += t_tie
        ties_score += s_tie
        if not (t_tie or s_tie):
            if (s[i] > s[j]) == (m[i] > m[j]):
                concordant += 1
            else:
                discordant += 1
    n0 = len(m) * (len(m) - 1) // 2
    denom = np.sqrt(float(n0 - ties_truth) * float(n0 - ties_score))
    return float((concordant - discordant) / denom) if denom > 0 else float("nan")


def reliability(seeds) -> float:
    """Spearman–Brown reliability of the mean over the k seeds (module docstring)."""
    x = np.asarray(seeds, float)
    k = x.shape[1]
    rs = [np.corrcoef(x[:, a], x[:, b])[0, 1] for a, b in itertools.combinations(range(k), 2)
          if np.ptp(x[:, a]) > 0 and np.ptp(x[:, b]) > 0]
    if not rs:
        return float("nan")
    r = float(np.mean(rs))
    return k * r / (1 + (k - 1) * r)
