"""Predict a candidate's final accuracy from its early (β_eff, accuracy) observations.

Algorithm 1 (as we read Jiang et al. 2024): a converged ReLU network has β_eff = 0 (Theorem 1), so
fit accuracy ~ β_eff on the early epochs and read the fit at β_eff = 0:

    observations (epoch_t, β_t, acc_t), t = 1..T
    drop the first t0 observations (the probe is still random there)
    drop unstable points: |denominator_t| tiny (1ᵀP1 passing through zero) or β_t an outlier (MAD rule)
    BayesianRidge: acc ≈ a + b·β          (scikit-learn, evidence-maximised priors)
    predicted final accuracy = a ± std    (predictive mean and std at β = 0)

Degenerate inputs never give a silent number: too few usable points or a constant β give a flagged
fallback (the last observed accuracy, with the spread of the observed accuracies as std).

``CrossRunPredictor`` is the other reading: a regressor fitted on finished runs (features of the early
trajectory → final accuracy) that predicts for new runs. ``p_best`` turns predictive distributions into
the probability that each candidate is the best.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import BayesianRidge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

MIN_POINTS = 3  # fewer usable (β_eff, accuracy) points than this: Algorithm 1 falls back to the last accuracy


@dataclass
class Prediction:
    """Predicted final accuracy (fraction in [0, 1]) with its standard deviation and flags."""

    accuracy: float
    std: float
    n_points: int
    method: str  # "beta_extrapolation" | "fallback_last"
    flags: list[str] = field(default_factory=list)
    slope: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _as_1d(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {n}")
    return arr


def stable_mask(beta: np.ndarray, denominators: np.ndarray | None = None, den_floor: float = 0.05,
                mad_k: float = 6.0) -> np.ndarray:
    """Points to keep: finite β, |denominator| ≥ den_floor·median|denominator|, β within mad_k MADs."""
    keep = np.isfinite(beta)
    if denominators is not None:
        den = np.abs(denominators)
        ref = np.median(den[np.isfinite(den)]) if np.isfinite(den).any() else 0.0
        keep &= np.isfinite(den) & (den >= den_floor * ref)
    if keep.sum() >= 4:
        med = np.median(beta[keep])
        mad = np.median(np.abs(beta[keep] - med))
        if mad > 0:
            keep &= np.abs(beta - med) <= mad_k * 1.4826 * mad
    return keep


def predict_final_accuracy(
    beta: Sequence[float],
    accuracy: Sequence[float],
    *,
    t0: int = 1,
    denominators: Sequence[float] | None = None,
    min_points: int = MIN_POINTS,
    clip: bool = True,
) -> Prediction:
    """Algorithm 1: BayesianRidge of accuracy on β_eff, evaluated at β_eff = 0.

    Parameters
    ----------
    beta : sequence of float, shape (T,)
        β_eff after each early epoch (or every k steps), in time order.
    accuracy : sequence of float, shape (T,)
        Validation accuracy (fraction) at the same observations.
    t0 : int
        Number of leading observations to skip.
    denominators : sequence of float, shape (T,), optional
        1ᵀP1 at each observation; points where it nearly vanishes are dropped (β is unstable there).
    min_points : int
        Fewer usable points than this → flagged fallback.
    """
    beta = _as_1d("beta", beta)
    acc = _as_1d("accuracy", accuracy, beta.shape[0])
    if beta.shape[0] == 0:
        raise ValueError("no observations: need at least one (beta_eff, accuracy) pair")
    if t0 < 0:
        raise ValueError(f"t0 must be >= 0, got {t0}")
    den = None if denominators is None else _as_1d("denominators", denominators, beta.shape[0])
    if not np.isfinite(acc).any():
        raise ValueError("accuracy has no finite value")
    flags: list[str] = []
    idx = np.arange(beta.shape[0]) >= t0
    if idx.sum() < min_points and beta.shape[0] >= min_points:
        flags.append(f"t0={t0} leaves {int(idx.sum())} points: used the last {min_points}")
        idx = np.arange(beta.shape[0]) >= beta.shape[0] - min_points
    keep = idx & stable_mask(beta, den) & np.isfinite(acc)
    dropped = int(idx.sum() - keep.sum())
    if dropped:
        flags.append(f"dropped {dropped} unstable point(s)")
    b, a = beta[keep], acc[keep]
    last = float(acc[np.isfinite(acc)][-1])
    spread = float(np.std(acc[np.isfinite(acc)])) if np.isfinite(acc).sum() > 1 else 0.0
    fallback_std = max(spread, 0.01)
    if keep.sum() < min_points:
        flags.append(f"only {int(keep.sum())} usable point(s) (< {min_points})")
        return Prediction(last, fallback_std, int(keep.sum()), "fallback_last", flags)
    scale = np.std(b)
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, np.abs(b).max()):
        flags.append("beta_eff is constant over the observations")
        return Prediction(last, fallback_std, int(keep.sum()), "fallback_last", flags)
    # standardise β for a well-conditioned fit; β = 0 maps to z0 = -mean/scale
    z = (b - b.mean()) / scale
    model = BayesianRidge(compute_score=False).fit(z[:, None], a)
    mean, std = model.predict(np.array([[-b.mean() / scale]]), return_std=True)
    pred, sd = float(mean[0]), float(std[0])
    if clip and not 0.0 <= pred <= 1.0:
        flags.append(f"extrapolation {pred:.3f} clipped to [0, 1]")
        pred = float(np.clip(pred, 0.0, 1.0))
    return Prediction(pred, sd, int(keep.sum()), "beta_extrapolation", flags, slope=float(model.coef_[0] / scale))


# ---------------------------------------------------------------- cross-run mode
def trajectory_features(beta: Sequence[float], accuracy: Sequence[float], t0: int = 1) -> np.ndarray:
    """Features of one early trajectory, shape (6,): last accuracy, accuracy slope, Algorithm-1 prediction,
    last β (signed log-compressed), β slope (signed log-compressed), number of points."""
    beta = _as_1d("beta", beta)
    acc = _as_1d("accuracy", accuracy, beta.shape[0])
    p = predict_final_accuracy(beta, acc, t0=t0)
    t = np.arange(acc.shape[0], dtype=float)
    acc_slope = np.polyfit(t, acc, 1)[0] if acc.shape[0] > 1 else 0.0
    finite = np.isfinite(beta)
    b = beta[finite] if finite.any() else np.zeros(1)
    b_slope = np.polyfit(np.arange(b.shape[0], dtype=float), b, 1)[0] if b.shape[0] > 1 else 0.0
    slog = lambda v: float(np.sign(v) * np.log1p(abs(v)))
    return np.array([acc[-1], acc_slope, p.accuracy, slog(b[-1]), slog(b_slope), float(acc.shape[0])])


class CrossRunPredictor(RegressorMixin, BaseEstimator):
    """Regressor from early-trajectory features to final accuracy, fitted on finished runs.

    ``make_pipeline(StandardScaler(), regressor)``: each feature is standardised, then a Bayesian
    linear regression (default ``BayesianRidge()``) gives a predictive mean and std.

    Parameters
    ----------
    regressor : estimator, optional
        Final step; its ``predict`` must accept ``return_std``. Default ``BayesianRidge()``.

    ``fit(X, y)``: X (n_runs, n_features) from ``trajectory_features`` (optionally with extra columns
    such as LogME), n_runs >= 3, y (n_runs,) final accuracies. ``predict(X, return_std=False)`` gives
    the mean, shape (n,), or ``(mean, std)``.
    """

    def __init__(self, regressor=None):
        self.regressor = regressor

    def fit(self, X, y) -> CrossRunPredictor:
        X, y = validate_data(self, X, y, ensure_min_samples=3, y_numeric=True, ensure_all_finite=False)
        if not np.isfinite(X).all():  # own check: sklearn's message does not say what to do
            raise ValueError("X contains NaN or inf; X must be finite (drop failed runs before fitting)")
        regressor = BayesianRidge() if self.regressor is None else clone(self.regressor)
        self.pipeline_ = make_pipeline(StandardScaler(), regressor).fit(X, y)
        return self

    def predict(self, X, return_std: bool = False):
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False)
        return self.pipeline_.predict(X, return_std=return_std)


# ---------------------------------------------------------------- ranking
def p_best(means: Sequence[float], stds: Sequence[float], n_samples: int = 20000, seed: int = 0) -> np.ndarray:
    """P(candidate i has the highest final accuracy), shape (n,), from independent Gaussian predictive
    distributions N(mean_i, std_i²), by Monte Carlo. NaN means (failed candidates) get probability 0."""
    means = _as_1d("means", means)
    stds = _as_1d("stds", stds, means.shape[0])
    ok = np.isfinite(means)
    out = np.zeros(means.shape[0])
    if not ok.any():
        return out
    sd = np.where(np.isfinite(stds[ok]) & (stds[ok] > 0), stds[ok], 1e-9)
    draws = np.random.default_rng(seed).normal(means[ok], sd, size=(n_samples, int(ok.sum())))
    counts = np.bincount(draws.argmax(1), minlength=int(ok.sum()))
    out[ok] = counts / n_samples
    return out


def rank_order(scores: Sequence[float]) -> np.ndarray:
    """1-based ranks, shape (n,), best (highest score) = 1; non-finite scores (NaN: failed) rank last,
    ties broken by input order: ``scipy.stats.rankdata(method="ordinal")`` of the negated scores."""
    s = _as_1d("scores", scores)
    return rankdata(np.where(np.isfinite(s), -s, np.inf), method="ordinal").astype(int)
