"""Every ranker of the benchmark, scored from the same cached runs at the same early budget k.

A ranker maps the runs of one task (one per candidate) and a budget k (epochs) to one score per
candidate, higher = predicted better. All use only observations with epoch ≤ k, except the
training-free ones (LogME, source accuracy) and the combined predictor's training data (other tasks'
full runs, leave-one-task-out).
"""
from __future__ import annotations

import numpy as np

from ncap.bench.baselines import learning_curve_extrapolation, successive_halving, tse_ema
from ncap.capacitance.predictor import CrossRunPredictor, predict_final_accuracy, trajectory_features


def prefix(run: dict, k: float) -> np.ndarray:
    return np.asarray(run["epoch"]) <= k + 1e-9


def final_accuracy(run: dict) -> float:
    """Ground truth: mean validation accuracy over the last epoch of the full fine-tune. A single
    observation at a constant learning rate fluctuates by several points between neighbouring steps
    (measured: up to ~15 points on digits), which would make the truth noisier than the rankers."""
    if run["status"] != "ok":
        return float("nan")
    epochs, acc = np.asarray(run["epoch"]), np.asarray(run["val_accuracy"])
    return float(acc[epochs > epochs[-1] - 1 + 1e-9].mean())


def ncap_name(variant: str, t0: int, stride: int = 1) -> str:
    """Ranker name of one ncap configuration: ``ncap[magnitude,t0=1]``, ``ncap[magnitude,t0=1,obs/2]``."""
    return f"ncap[{variant},t0={t0}" + (f",obs/{stride}" if stride > 1 else "") + "]"


def parse_ncap_name(name: str) -> tuple[str, int, int]:
    """Inverse of :func:`ncap_name`: (variant, t0, stride)."""
    parts = name[len("ncap["):-1].split(",")
    stride = int(parts[2].split("/")[1]) if len(parts) > 2 else 1
    return parts[0], int(parts[1].split("=")[1]), stride


def ncap_score(run: dict, k: float, variant: str = "default", t0: int = 1, stride: int = 1) -> float:
    """ncap's predicted final accuracy from the observations up to epoch k. ``stride`` > 1 keeps every
    stride-th of them (counting back from the latest), i.e. fewer observations per epoch."""
    pred = ncap_prediction(run, k, variant, t0, stride)
    return float("nan") if pred is None else pred.accuracy


def ncap_prediction(run: dict, k: float, variant: str = "default", t0: int = 1, stride: int = 1):
    """The full :class:`~capacitance.predictor.Prediction` behind :func:`ncap_score` (None: no usable run).
    ``method == "fallback_last"`` means too few usable points: the score is then the last accuracy."""
    m = prefix(run, k)
    if stride > 1:
        keep = np.flatnonzero(m)[::-1][::stride][::-1]
        m = np.zeros_like(m)
        m[keep] = True
    if run["status"] != "ok" or m.sum() == 0:
        return None
    beta = np.asarray(run["beta_eff"][variant], dtype=float)[m]
    den = np.asarray(run["beta_denominator"][variant], dtype=float)[m]
    acc = np.asarray(run["val_accuracy"])[m]
    return predict_final_accuracy(beta, acc, t0=t0, denominators=den)


def val_acc_score(run: dict, k: float) -> float:
    m = prefix(run, k)
    return float(np.asarray(run["val_accuracy"])[m][-1]) if m.any() else float("nan")


def tse_score(run: dict, k: float) -> float:
    m = prefix(run, k)
    return tse_ema(np.asarray(run["train_loss"])[m]) if m.any() else float("nan")


def lc_score(run: dict, k: float, horizon: float) -> float:
    m = prefix(run, k)
    if not m.any():
        return float("nan")
    return float(learning_curve_extrapolation(np.asarray(run["epoch"])[m], np.asarray(run["val_accuracy"])[m], horizon)[0])


def successive_halving_scores(runs: list[dict], k: float, evals_per_epoch: int) -> np.ndarray:
    """Successive halving with the same total compute as k epochs for every candidate; budget unit =
    one observation interval. Evaluating a candidate for u units reads its run after u intervals
    (identical to resuming training, given fixed seeds). Scores: survivors first (higher = better)."""
    n = len(runs)
    units = int(np.rint(k * evals_per_epoch))
    accs = {r["candidate"]: r["val_accuracy"] for r in runs}

    def evaluate(name, u):
        a = accs[name]
        return a[min(u, len(a)) - 1] if a else float("nan")

    try:
        res = successive_halving([r["candidate"] for r in runs], evaluate, total_budget=n * units, eta=2)
    except ValueError:  # budget below n·⌈log2 n⌉ units: halving is not defined
        return np.full(n, np.nan)
    return np.asarray(res.scores, dtype=float)


def combined_features(run: dict, k: float, t0: int, variant: str = "default") -> np.ndarray:
    m = prefix(run, k)
    beta = np.asarray(run["beta_eff"][variant], dtype=float)[m]
    acc = np.asarray(run["val_accuracy"])[m]
    return np.concatenate([trajectory_features(beta, acc, t0=t0), [run["logme"]]])


def combined_scores(train_runs: list[dict], test_runs: list[dict], k: float, t0: int) -> np.ndarray:
    """Cross-run BayesianRidge (β features + early accuracy + LogME) fitted on other tasks' runs."""
    tr = [r for r in train_runs if r["status"] == "ok"]
    X = np.array([combined_features(r, k, t0) for r in tr])
    y = np.array([final_accuracy(r) for r in tr])
    model = CrossRunPredictor().fit(X, y)
    out = np.full(len(test_runs), np.nan)
    ok = [i for i, r in enumerate(test_runs) if r["status"] == "ok"]
    if ok:
        out[ok] = model.predict(np.array([combined_features(test_runs[i], k, t0) for i in ok]))
    return out
