"""Every ranker of the selection benchmark, scored from the same cached runs at the same compute.

A ranker maps one task's :class:`Signal` (one observed trajectory per candidate, plus what every peer may
use at that compute) to one score per candidate, higher = predicted better. Two signals per task:

* ``prefix@k``: the first k epochs of the seed-0 truth run (the full recipe's schedule, cut at k);
* ``short``: ncap's own short run with the ``ncap rank`` defaults (its own warm-up + cosine over its epochs).

Families:

* ncap (Algorithm 1 on β_eff): ``ncap[variant,t0=..,smooth=..]``; variant = the interaction matrix
  (``default`` signed, ``support`` on the line graph's edges, ``magnitude`` = |P|, non-negative);
  smooth = the β_eff trajectory before the regression (``none``, ``median3`` running median of 3,
  ``mean3`` running mean of 3 consecutive observations = 3 probe windows);
* early-curve peers: ``val-acc`` (last accuracy), ``tse-ema``, ``curve-extrapolation``;
* budget peers: ``successive-halving`` (η = 2) and ``successive-halving[eta=3]`` (fewer rounds: defined at
  smaller budgets) with the same total compute (n candidates × budget). Synchronous successive halving on
  cached runs; ASHA's asynchronous promotions reduce to it when every run proceeds at the same speed;
* training-free peers: ``logme``, ``h-score``, ``leep``, ``nce`` (LEEP/NCE only where a source head
  exists), ``source-accuracy`` (the zoo's source-task accuracy; others have none);
* ``combined``: a BayesianRidge on within-task centred features (early accuracy, β_eff trajectory
  features, LogME) meta-fitted on other (development) tasks' runs of the same signal.

Rankers that cannot score every candidate (``PARTIAL``) are evaluated on the candidates they score.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from ncap.bench.baselines import learning_curve_extrapolation, successive_halving, tse_ema
from ncap.capacitance.line_graph import VARIANTS
from ncap.capacitance.predictor import CrossRunPredictor, predict_final_accuracy, trajectory_features

T0S = (0, 1, 2)
SMOOTHERS = ("none", "median3", "mean3")
NCAP_DEFAULT = "ncap[support,t0=1,smooth=none]"  # β_eff (Algorithm 1) as `ncap rank` computes it with its defaults
STATIC = ("logme", "h-score", "leep", "nce", "source-accuracy")
PARTIAL = ("leep", "nce", "source-accuracy")
COMBINED_FEATURES = ("last_accuracy", "accuracy_slope", "ncap_prediction", "log_last_beta", "log_beta_slope",
                     "logme")


@dataclass
class Signal:
    """What the rankers of one task see at one compute budget.

    trajectories : per candidate, the observed run (a dict with ``epoch``, ``val_accuracy``, ``train_loss``,
        ``beta_eff``/``beta_denominator`` by variant, ``status``), cut to the budget
    full_runs : per candidate, the seed-0 truth run (successive halving resumes into it)
    static : per candidate, the training-free scores (``logme``, ``h-score``, ``leep``, ``nce``, ``source-accuracy``)
    budget_epochs : compute per candidate, in epochs of the full recipe's data
    full_epochs : epochs of the full fine-tune (the curve extrapolation's horizon)
    """

    trajectories: list[dict]
    full_runs: list[dict]
    static: list[dict]
    budget_epochs: float
    full_epochs: float
    extra: dict = field(default_factory=dict)  # "truth": the task's truth, "combined_model": the fitted combined


def truncate(run: dict, k: float) -> dict:
    """The run as observed up to epoch ``k`` (every per-observation list cut)."""
    m = np.asarray(run["epoch"], float) <= k + 1e-9
    n = int(m.sum())
    cut = {key: run[key][:n] for key in ("epoch", "val_accuracy", "train_loss")}
    for key in ("beta_eff", "beta_denominator"):
        cut[key] = {v: vals[:n] for v, vals in run.get(key, {}).items()}
    return {**run, **cut}


def final_accuracy(run: dict) -> float:
    """Validation accuracy at the end of a run (the cosine schedule has decayed to 0 there); NaN if failed."""
    return float(run["val_accuracy"][-1]) if run["status"] == "ok" and run["val_accuracy"] else float("nan")


# ------------------------------------------------------------------------------------------------ ncap
def ncap_name(variant: str, t0: int, smooth: str = "none") -> str:
    return f"ncap[{variant},t0={t0},smooth={smooth}]"


def parse_ncap_name(name: str) -> tuple[str, int, str]:
    """Inverse of :func:`ncap_name`: (variant, t0, smooth)."""
    variant, t0, smooth = name[len("ncap["):-1].split(",")
    return variant, int(t0.split("=")[1]), smooth.split("=")[1]


def smooth_beta(beta: np.ndarray, how: str) -> np.ndarray:
    """The β_eff trajectory (T,) smoothed: running median or mean over 3 observations (edges repeated)."""
    if how == "none" or len(beta) < 3:
        return beta
    if how == "median3":
        return median_filter(beta, size=3, mode="nearest")
    if how == "mean3":
        return uniform_filter1d(beta, size=3, mode="nearest")
    raise ValueError(f"unknown smoothing {how!r}; choose from {', '.join(SMOOTHERS)}")


def ncap_prediction(run: dict, variant: str = "support", t0: int = 1, smooth: str = "none"):
    """Algorithm 1 on an observed run: the :class:`~ncap.capacitance.predictor.Prediction`, or None for a
    failed or empty run. ``method == "fallback_last"``: too few usable points, the score is the last accuracy."""
    if run["status"] != "ok" or not run["val_accuracy"]:
        return None
    beta = np.asarray(run["beta_eff"][variant], float)
    den = np.asarray(run["beta_denominator"][variant], float)
    usable = np.isfinite(beta)
    if not usable.any():
        return predict_final_accuracy(beta, run["val_accuracy"], t0=t0)  # flagged fallback
    acc = np.asarray(run["val_accuracy"], float)[usable]
    return predict_final_accuracy(smooth_beta(beta[usable], smooth), acc, t0=t0, denominators=den[usable])


def ncap_scores(signal: Signal, variant: str, t0: int, smooth: str) -> tuple[np.ndarray, float]:
    """(scores, fallback rate): predicted final accuracies and the share of candidates that fell back."""
    preds = [ncap_prediction(r, variant, t0, smooth) for r in signal.trajectories]
    scores = np.array([np.nan if p is None else p.accuracy for p in preds])
    return scores, float(np.mean([p is None or p.method == "fallback_last" for p in preds]))


# ------------------------------------------------------------------------------------------- peers
def _per_run(signal: Signal, fn: Callable[[dict], float]) -> np.ndarray:
    return np.array([fn(r) if r["status"] == "ok" and r["val_accuracy"] else np.nan for r in signal.trajectories])


def val_acc_scores(signal: Signal) -> np.ndarray:
    return _per_run(signal, lambda r: r["val_accuracy"][-1])


def tse_scores(signal: Signal) -> np.ndarray:
    return _per_run(signal, lambda r: tse_ema(np.asarray(r["train_loss"], float)))


def curve_scores(signal: Signal) -> np.ndarray:
    return _per_run(signal, lambda r: learning_curve_extrapolation(r["epoch"], r["val_accuracy"], signal.full_epochs)[0])


def successive_halving_scores(signal: Signal, eta: int = 2) -> np.ndarray:
    """Successive halving with the signal's total compute (n × budget epochs), reading the seed-0 full runs:
    evaluating a candidate after u observation intervals (the first observation's epoch) reads its accuracy
    at the last observation up to that epoch (= resuming training, with fixed seeds; past the dense early
    window the truth run observes once per epoch). NaN when the budget is below one interval per candidate
    and round."""
    runs = signal.full_runs
    n = len(runs)
    epochs = [np.asarray(r["epoch"], float) for r in runs]
    interval = min(float(e[0]) for e in epochs if len(e))  # one observation interval, in epochs
    units = int(np.floor(signal.budget_epochs / interval + 1e-9))

    def evaluate(i, u):
        acc, seen = runs[i]["val_accuracy"], int(np.searchsorted(epochs[i], u * interval + 1e-9, side="right"))
        return acc[max(seen, 1) - 1] if runs[i]["status"] == "ok" and acc else float("nan")

    try:
        res = successive_halving(list(range(n)), evaluate, total_budget=n * units, eta=eta)
    except ValueError:  # budget below n·⌈log_eta n⌉ units
        return np.full(n, np.nan)
    return np.asarray(res.scores, dtype=float)


def static_scores(signal: Signal, key: str) -> np.ndarray:
    return np.array([s.get(key, np.nan) if s.get(key) is not None else np.nan for s in signal.static], dtype=float)


# ----------------------------------------------------------------------------------------- combined
def combined_features(signal: Signal, variant: str = "support", t0: int = 1) -> np.ndarray:
    """(n_candidates, len(COMBINED_FEATURES)) features, centred within the task (ranking is within a task);
    rows of failed runs are NaN."""
    rows = []
    for run, st in zip(signal.trajectories, signal.static):
        if run["status"] != "ok" or len(run["val_accuracy"]) == 0:
            rows.append(np.full(len(COMBINED_FEATURES), np.nan))
            continue
        beta = np.asarray(run["beta_eff"][variant], float)
        beta = np.where(np.isfinite(beta), beta, 0.0)
        f = trajectory_features(beta, run["val_accuracy"], t0=t0)[:5]  # the 6th (number of points) is constant
        rows.append(np.concatenate([f, [st.get("logme", np.nan)]]))
    x = np.array(rows, dtype=float)
    return x - np.nanmean(x, axis=0, keepdims=True)


def fit_combined(train: list[tuple[np.ndarray, np.ndarray]]) -> CrossRunPredictor | None:
    """Fit on [(centred features (n, F), truth (n,)), ...] of other tasks; truth is centred per task too.
    None when fewer than 3 finite rows."""
    xs, ys = [], []
    for x, y in train:
        ok = np.isfinite(x).all(1) & np.isfinite(y)
        xs.append(x[ok])
        ys.append(y[ok] - y[ok].mean())
    x, y = np.concatenate(xs), np.concatenate(ys)
    return CrossRunPredictor().fit(x, y) if len(y) >= 3 else None


def combined_scores(signal: Signal) -> np.ndarray:
    """Scores of the combined predictor ``signal.extra["combined_model"]`` (:func:`fit_combined` on other
    tasks' runs of the same signal); NaN where there is none."""
    model = signal.extra.get("combined_model")
    x = combined_features(signal)
    out = np.full(len(x), np.nan)
    ok = np.isfinite(x).all(1)
    if model is not None and ok.any():
        out[ok] = model.predict(x[ok])
    return out


ARTEFACT_FORMAT = "ncap-combined-predictor"


def combined_artefact(model: CrossRunPredictor, provenance: dict) -> dict:
    """A fitted combined predictor as plain JSON-able coefficients (``bench/results/combined_predictor.json``)."""
    scaler, reg = model.pipeline_[0], model.pipeline_[-1]
    return {"format": ARTEFACT_FORMAT, "version": 1, "features": list(COMBINED_FEATURES),
            "features_centred_within_ranking": True, "scaler_mean": scaler.mean_.tolist(),
            "scaler_scale": scaler.scale_.tolist(), "coef": reg.coef_.tolist(), "intercept": float(reg.intercept_),
            "provenance": provenance}


def artefact_scores(artefact: dict, features: np.ndarray) -> np.ndarray:
    """Scores (n,) of a :func:`combined_artefact` for one ranking's features (n, F) from
    :func:`combined_features` (centred over the ranking's candidates): ``intercept + coef · (x - mean) / scale``."""
    if artefact.get("format") != ARTEFACT_FORMAT or list(artefact["features"]) != list(COMBINED_FEATURES):
        raise ValueError("not a combined-predictor artefact for these features")
    z = (np.asarray(features, float) - np.asarray(artefact["scaler_mean"])) / np.asarray(artefact["scaler_scale"])
    return artefact["intercept"] + z @ np.asarray(artefact["coef"])


# ------------------------------------------------------------------------------------------ registry
def ncap_configurations(variants=VARIANTS) -> list[str]:
    return [ncap_name(v, t0, s) for v in VARIANTS if v in variants for t0 in T0S for s in SMOOTHERS]


PEERS: dict[str, Callable[[Signal], np.ndarray]] = {
    "val-acc": val_acc_scores,
    "tse-ema": tse_scores,
    "curve-extrapolation": curve_scores,
    "successive-halving": successive_halving_scores,
    "successive-halving[eta=3]": lambda s: successive_halving_scores(s, eta=3),
    "combined": combined_scores,
    **{key: (lambda s, key=key: static_scores(s, key)) for key in STATIC},
}


def product_settings(ranker: str) -> dict | None:
    """The ``ncap rank`` settings (:class:`~ncap.models.recipe.Recipe` fields) under which ``ncap rank`` ranks by
    ``ranker`` from its own run; None for a ranker it cannot compute (successive halving needs other runs;
    curve extrapolation, smoothing, training-free scores and the combined predictor are not ranking rules)."""
    if ranker == "val-acc":
        return {"ranker": "val_acc"}
    if ranker == "tse-ema":
        return {"ranker": "tse_ema"}
    if ranker.startswith("ncap["):
        variant, t0, smooth = parse_ncap_name(ranker)
        return {"ranker": "beta_eff", "variant": variant, "t0": t0} if smooth == "none" else None
    return None


def score_all(signal: Signal) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({ranker: scores (n_candidates,)}, {ncap configuration: fallback rate}) for one task and signal."""
    scores, fallback = {}, {}
    recorded = set().union(*(r.get("beta_eff", {}) for r in signal.trajectories))
    for name in ncap_configurations(recorded):
        scores[name], fallback[name] = ncap_scores(signal, *parse_ncap_name(name))
    for name, fn in PEERS.items():
        scores[name] = fn(signal)
    return scores, fallback
