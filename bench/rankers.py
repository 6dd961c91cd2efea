"""Every ranker of the selection benchmark, scored from the same cached runs at the same compute.

A ranker maps one task's :class:`Signal` (one observed trajectory per candidate, plus what every peer may
use at that compute) to one score per candidate, higher = predicted better. Two signals per task:

* ``prefix@k``: the first k epochs of the seed-0 truth run (the full recipe's schedule, cut at k);
* ``short``: ncap's own short run with the ``ncap rank`` defaults (its own warm-up + cosine over its epochs).

Rankers, by the names the product uses (one registry, ``ncap.capacitance.ranking_rules.RANKING_RULES``):

* the product's ranking rules, scored through the product's own rule functions
  (:func:`~ncap.capacitance.ranking_rules.score_run`): a rule that reads β_eff (``beta_eff``, Algorithm 1) in
  every configuration ``beta_eff[variant,t0=..,smooth=..]``; variant = the interaction matrix (``default``
  signed, ``support`` on the line graph's edges, ``magnitude`` = |P|, non-negative); smooth = the β_eff
  trajectory before the rule reads it (``none``, ``median3`` running median of 3, ``mean3`` running mean of 3
  consecutive observations = 3 probe windows); every other rule (``val_acc``, ``tse_ema``) once, by its name.
  A rule registered in the product is scored here too;
* the benchmark's own (:data:`BENCH_ONLY`), which ``ncap rank`` cannot compute from its own run:
  ``curve_extrapolation``; budget peers ``successive_halving`` (η = 2) and ``successive_halving[eta=3]``
  (fewer rounds: defined at smaller budgets) with the same total compute (n candidates × budget), synchronous
  successive halving on cached runs (ASHA's asynchronous promotions reduce to it when every run proceeds at
  the same speed); training-free peers ``logme``, ``h_score``, ``leep``, ``nce`` (LEEP/NCE only where a source
  head exists), ``source_accuracy`` (the zoo's source-task accuracy; others have none); ``combined``, a
  BayesianRidge on within-task centred features (early accuracy, β_eff trajectory features, LogME)
  meta-fitted on other (development) tasks' runs of the same signal. They stay out of the product's registry
  because its rules are choices of ``ncap rank --ranker`` and of the job config, which these cannot be (they
  read other candidates' runs, the full schedule, training-free scores or a model fitted on other tasks).

Records and result files written before the one registry spell names differently (``val-acc``, ``h-score``,
``ncap[support,t0=1,smooth=none]``): :func:`current_name` is where they are read. Rankers that cannot score
every candidate (``PARTIAL``) are evaluated on the candidates they score.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from ncap.bench.baselines import learning_curve_extrapolation, successive_halving
from ncap.capacitance.line_graph import VARIANTS
from ncap.capacitance.predictor import CrossRunPredictor, trajectory_features
from ncap.capacitance.ranking_rules import RANKING_RULES, RuleScore, score_run

T0S = (0, 1, 2)
SMOOTHERS = ("none", "median3", "mean3")
NCAP_DEFAULT = "beta_eff[support,t0=1,smooth=none]"  # β_eff (Algorithm 1) as `ncap rank` computes it by default
STATIC = ("logme", "h_score", "leep", "nce", "source_accuracy")
PARTIAL = ("leep", "nce", "source_accuracy")
COMBINED_FEATURES = ("last_accuracy", "accuracy_slope", "ncap_prediction", "log_last_beta", "log_beta_slope",
                     "logme")


def current_name(name: str) -> str:
    """A ranker's or training-free score's name as spelled now, from the spelling of the records and result
    files written before the one registry of rules (``val-acc`` -> ``val_acc``, ``h-score`` -> ``h_score``,
    ``ncap[support,t0=1,smooth=none]`` -> ``beta_eff[support,t0=1,smooth=none]``); a current name is returned
    as it is. The one place old names are read."""
    if name.startswith("ncap["):
        name = "beta_eff[" + name[len("ncap["):]
    return name.replace("-", "_")


@dataclass
class Signal:
    """What the rankers of one task see at one compute budget.

    trajectories : per candidate, the observed run (a dict with ``epoch``, ``val_accuracy``, ``train_loss``,
        ``beta_eff``/``beta_denominator`` by variant, ``status``), cut to the budget
    full_runs : per candidate, the seed-0 truth run (successive halving resumes into it)
    static : per candidate, the training-free scores (``logme``, ``h_score``, ``leep``, ``nce``,
        ``source_accuracy``; a record's older spelling, such as ``h-score``, is read as today's: :func:`current_name`)
    budget_epochs : compute per candidate, in epochs of the full recipe's data
    full_epochs : epochs of the full fine-tune (the curve extrapolation's horizon)
    """

    trajectories: list[dict]
    full_runs: list[dict]
    static: list[dict]
    budget_epochs: float
    full_epochs: float
    extra: dict = field(default_factory=dict)  # "truth": the task's truth, "combined_model": the fitted combined

    def __post_init__(self):
        self.static = [{current_name(k): v for k, v in scores.items()} for scores in self.static]


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


# ----------------------------------------------------------------------------------- the product's rules
def configuration_name(rule: str, variant: str, t0: int, smooth: str = "none") -> str:
    """The name of a rule that reads β_eff in one configuration: ``beta_eff[support,t0=1,smooth=none]``."""
    return f"{rule}[{variant},t0={t0},smooth={smooth}]"


def parse_configuration(name: str) -> tuple[str, str, int, str]:
    """Inverse of :func:`configuration_name`: (rule, variant, t0, smooth)."""
    rule, settings = name[:-1].split("[", 1)
    variant, t0, smooth = settings.split(",")
    return rule, variant, int(t0.split("=")[1]), smooth.split("=")[1]


def _reads_beta(rule: str) -> bool:
    return "variant" in RANKING_RULES[rule].settings


def is_configuration(name: str) -> bool:
    """Whether ``name`` is a configuration of a product rule that reads β_eff (``beta_eff[...]``)."""
    rule = name.split("[", 1)[0]
    return "[" in name and rule in RANKING_RULES and _reads_beta(rule)


def configurations(variants=VARIANTS) -> list[str]:
    """Every configuration of the product's rules that read β_eff: variant (those of ``variants``) × t0 ×
    smoothing."""
    return [configuration_name(rule, v, t0, s) for rule in RANKING_RULES if _reads_beta(rule)
            for v in VARIANTS if v in variants for t0 in T0S for s in SMOOTHERS]


def plain_rules() -> list[str]:
    """The product's rules that do not read β_eff: each is scored once, under its own name."""
    return [rule for rule in RANKING_RULES if not _reads_beta(rule)]


def smooth_beta(beta: np.ndarray, how: str) -> np.ndarray:
    """The β_eff trajectory (T,) smoothed: running median or mean over 3 observations (edges repeated)."""
    if how == "none" or len(beta) < 3:
        return beta
    if how == "median3":
        return median_filter(beta, size=3, mode="nearest")
    if how == "mean3":
        return uniform_filter1d(beta, size=3, mode="nearest")
    raise ValueError(f"unknown smoothing {how!r}; choose from {', '.join(SMOOTHERS)}")


def _observed(run: dict, variant: str = "support") -> dict[str, np.ndarray]:
    """The run's per-observation series as :func:`~ncap.capacitance.ranking_rules.score_run` takes them, with
    β_eff of ``variant`` (empty where not recorded)."""
    series = {"val_accuracy": run["val_accuracy"], "train_loss": run["train_loss"],
              "beta_eff": run.get("beta_eff", {}).get(variant, []),
              "beta_denominator": run.get("beta_denominator", {}).get(variant, [])}
    return {key: np.asarray(values, float) for key, values in series.items()}


def configuration_score(run: dict, name: str) -> RuleScore | None:
    """A configuration (:func:`configuration_name`) scored on an observed run by the product's rule; None for a
    failed or empty run. The rule reads the finite β_eff points only, smoothed; with none, it reads the run as
    it is (Algorithm 1 then falls back to the last accuracy: ``method == "fallback_last"``)."""
    if run["status"] != "ok" or not run["val_accuracy"]:
        return None
    rule, variant, t0, smooth = parse_configuration(name)
    series = _observed(run, variant)
    usable = np.isfinite(series["beta_eff"])
    if not usable.any():
        return score_run(rule, **{**series, "beta_denominator": ()}, t0=t0)
    series = {key: values[usable] for key, values in series.items()}
    return score_run(rule, **{**series, "beta_eff": smooth_beta(series["beta_eff"], smooth)}, t0=t0)


def configuration_scores(signal: Signal, name: str) -> tuple[np.ndarray, float]:
    """(scores, fallback rate) of a configuration: the scores (Algorithm 1's predicted final accuracies) and the
    share of candidates that fell back."""
    preds = [configuration_score(r, name) for r in signal.trajectories]
    scores = np.array([np.nan if p is None else p.score for p in preds])
    return scores, float(np.mean([p is None or p.method == "fallback_last" for p in preds]))


def _per_run(signal: Signal, fn: Callable[[dict], float]) -> np.ndarray:
    return np.array([fn(r) if r["status"] == "ok" and r["val_accuracy"] else np.nan for r in signal.trajectories])


def rule_scores(signal: Signal, rule: str) -> np.ndarray:
    """A product rule that does not read β_eff (``val_acc``, ``tse_ema``), scored on every observed run by the
    product's own rule function; NaN for a failed or empty run."""
    return _per_run(signal, lambda r: score_run(rule, **_observed(r)).score)


# ------------------------------------------------------------------------------- the benchmark's own
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
BENCH_ONLY: dict[str, Callable[[Signal], np.ndarray]] = {
    "curve_extrapolation": curve_scores,
    "successive_halving": successive_halving_scores,
    "successive_halving[eta=3]": lambda s: successive_halving_scores(s, eta=3),
    "combined": combined_scores,
    **{key: (lambda s, key=key: static_scores(s, key)) for key in STATIC},
}


def peers() -> list[str]:
    """Every ranker but the β_eff configurations: the product's other rules, then the benchmark's own (the
    peers the reports show and compare against)."""
    return [*plain_rules(), *BENCH_ONLY]


def product_settings(ranker: str) -> dict | None:
    """The ``ncap rank`` settings (:class:`~ncap.models.recipe.Recipe` fields) under which ``ncap rank`` ranks by
    ``ranker`` from its own run, read off the name: ``{"ranker": ranker}`` for a product rule, plus ``variant``
    and ``t0`` for an unsmoothed configuration; None for a ranker it cannot compute (the benchmark's own, and
    smoothing, which is not a setting of the product)."""
    if ranker in RANKING_RULES:
        return {"ranker": ranker}
    if not is_configuration(ranker):
        return None
    rule, variant, t0, smooth = parse_configuration(ranker)
    return {"ranker": rule, "variant": variant, "t0": t0} if smooth == "none" else None


def score_all(signal: Signal) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({ranker: scores (n_candidates,)}, {configuration: fallback rate}) for one task and signal: every
    configuration of the rules that read β_eff (the recorded variants), every other product rule, and the
    benchmark's own rankers."""
    scores, fallback = {}, {}
    recorded = set().union(*(r.get("beta_eff", {}) for r in signal.trajectories))
    for name in configurations(recorded):
        scores[name], fallback[name] = configuration_scores(signal, name)
    for name in plain_rules():
        scores[name] = rule_scores(signal, name)
    for name, fn in BENCH_ONLY.items():
        scores[name] = fn(signal)
    return scores, fallback
