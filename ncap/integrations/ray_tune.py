"""Ray Tune scheduler that stops trials whose predicted final accuracy is unlikely to beat the best trial.

The trainable reports the metric and β_eff in the same ``tune.report`` call, e.g. from a tracker::

    tracker.observe(epoch, val_accuracy)
    tune.report(tracker_metrics(tracker))   # {"accuracy": ..., "beta_eff": ..., "beta_denominator": ...}

and ``CapacitanceScheduler`` returns ``STOP`` once :func:`ncap.integrations.rule.capacitance_verdict` says
so, with the incumbent = the completed trial (ran to its end; trials this scheduler stopped never count) with
the best last-reported metric, and that trial's own reported observations. Trials run FIFO otherwise. Why no ``tune.Stopper``: a stopper sees
results but is never told when a trial completes, so it cannot know the incumbent's final value.
"""
from __future__ import annotations

import math
from collections import defaultdict

from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ncap.integrations.rule import DEFAULT_MIN_STD, Verdict, capacitance_verdict

__all__ = ["CapacitanceScheduler", "tracker_metrics"]


def tracker_metrics(tracker, metric: str = "accuracy", beta_attr: str = "beta_eff",
                    denominator_attr: str = "beta_denominator") -> dict[str, float]:
    """The last observation of an ``ncap.BetaEffTracker`` as a ``tune.report`` dict: the validation
    accuracy under ``metric``, β_eff of the tracker's variant and its denominator (the scheduler's keys)."""
    if not tracker.val_accuracy:
        raise ValueError("the tracker has no observation yet: call tracker.observe(...) first")
    v = tracker.variant
    return {metric: tracker.val_accuracy[-1], beta_attr: tracker.beta_eff[v][-1],
            denominator_attr: tracker.denominator[v][-1]}


class CapacitanceScheduler(FIFOScheduler):
    """FIFO scheduler that stops a trial once P(its final metric beats the best completed trial's) < threshold.

    Parameters
    ----------
    metric, mode : str, optional
        The reported metric and ``"max"`` / ``"min"``; or set through ``tune.TuneConfig(metric=, mode=)``.
    beta_attr, denominator_attr : str
        Result keys holding β_eff and 1ᵀP1 (the denominator is optional in each result).
    time_attr : str
        Monotonic progress key; ``grace_period`` is in its units.
    threshold : float in (0, 1)
        Stop when P(better) is below it. Default 0.05.
    grace_period : float
        No stopping before ``result[time_attr] >= grace_period`` (Optuna's n_warmup_steps).
    n_startup_trials : int
        No stopping until this many trials have completed (at least one: the incumbent).
    t0, min_points, min_std, stop_on_fallback
        As in :func:`ncap.integrations.rule.capacitance_verdict`.

    Attributes
    ----------
    verdicts : dict[str, Verdict]
        The last verdict per trial id (for logs and tests).
    """

    def __init__(self, metric: str | None = None, mode: str | None = None, *, beta_attr: str = "beta_eff",
                 denominator_attr: str = "beta_denominator", time_attr: str = "training_iteration",
                 threshold: float = 0.05, grace_period: float = 0, n_startup_trials: int = 1, t0: int = 1,
                 min_points: int = 3, min_std: float = DEFAULT_MIN_STD, stop_on_fallback: bool = False) -> None:
        super().__init__()
        if mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self._metric, self._mode = metric, mode
        self.beta_attr, self.denominator_attr, self.time_attr = beta_attr, denominator_attr, time_attr
        self.threshold, self.grace_period, self.n_startup_trials = threshold, grace_period, n_startup_trials
        self.t0, self.min_points, self.min_std, self.stop_on_fallback = t0, min_points, min_std, stop_on_fallback
        self.history: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # (metric, β, denominator)
        self.completed: dict[str, float] = {}  # trial id -> final metric (trials that ran to their end)
        self.stopped: set[str] = set()
        self.verdicts: dict[str, Verdict] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric or DEFAULT_METRIC
        self._mode = mode or self._mode
        return True

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if not self._metric or self._mode not in ("max", "min"):
            raise ValueError("CapacitanceScheduler needs `metric` and `mode` ('max' or 'min'), here or in "
                             "tune.TuneConfig(metric=..., mode=...)")

    def _record(self, trial: Trial, result: dict) -> None:
        nan = float("nan")
        value = lambda key: nan if result.get(key) is None else float(result[key])
        self.history[trial.trial_id].append((value(self._metric), value(self.beta_attr), value(self.denominator_attr)))

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self._metric not in result:
            return TrialScheduler.CONTINUE
        self._record(trial, result)
        if result.get(self.time_attr, 0) < self.grace_period or len(self.completed) < max(1, self.n_startup_trials):
            return TrialScheduler.CONTINUE
        metric, beta, den = (list(col) for col in zip(*self.history[trial.trial_id]))
        maximize = self._mode == "max"
        if math.isnan(metric[-1]):
            verdict = Verdict(True, 0.0, None, None, "the last reported value is NaN")
        else:
            incumbent = (max if maximize else min)(self.completed, key=self.completed.get)
            inc_metric, inc_beta, inc_den = (list(col) for col in zip(*self.history[incumbent]))
            verdict = capacitance_verdict(beta, metric, inc_beta, inc_metric, denominators=den,
                                          incumbent_denominators=inc_den, maximize=maximize,
                                          threshold=self.threshold, t0=self.t0, min_points=self.min_points,
                                          min_std=self.min_std, stop_on_fallback=self.stop_on_fallback)
        self.verdicts[trial.trial_id] = verdict
        if verdict.stop:
            self.stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        if trial.trial_id in self.stopped:
            return
        final = (result or {}).get(self._metric)
        if final is None and self.history[trial.trial_id]:
            final = self.history[trial.trial_id][-1][0]
        if final is not None and math.isfinite(float(final)) and self.history[trial.trial_id]:
            self.completed[trial.trial_id] = float(final)

    def debug_string(self) -> str:
        return (f"Using CapacitanceScheduler: {len(self.completed)} completed, {len(self.stopped)} stopped "
                f"(threshold {self.threshold}).")
