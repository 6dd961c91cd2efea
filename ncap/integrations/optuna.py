"""Optuna pruner that stops trials whose predicted final accuracy is unlikely to beat the best trial.

The objective reports the validation accuracy with ``trial.report(accuracy, step)`` (Optuna's own API) and
β_eff with :func:`report_beta` at the same step, or both at once from a tracker with :func:`report_tracker`;
the pruner reads them back from the trial::

    tracker = ncap.BetaEffTracker(probe)
    for epoch in range(epochs):
        ...                                       # train, calling tracker.collect(features, labels)
        tracker.observe(epoch, val_accuracy)
        report_tracker(trial, tracker, step=epoch)  # = trial.report(val_accuracy, epoch) + report_beta(...)
        if trial.should_prune():
            raise optuna.TrialPruned()

The rule is :func:`ncap.integrations.rule.capacitance_verdict`, with the incumbent ``study.best_trial``
(the COMPLETE trial with the best value) and its own reported observations. ``n_startup_trials``, ``n_warmup_steps`` and
``interval_steps`` mean what they mean for ``optuna.pruners.MedianPruner``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ncap.integrations.rule import DEFAULT_MIN_STD, Verdict, capacitance_verdict

__all__ = ["BETA_ATTR", "CapacitancePruner", "report_beta", "report_tracker", "trial_observations"]

BETA_ATTR = "ncap_beta_eff"  # user attr: JSON list of [step, beta_eff, numerator, denominator]


def _json_number(value) -> float | None:
    value = None if value is None else float(value)
    return None if value is None or not math.isfinite(value) else value  # strict JSON for RDB storages


def report_beta(trial: optuna.Trial, step: int, beta, numerator: float | None = None,
                denominator: float | None = None) -> None:
    """Record β_eff of ``trial`` at ``step`` (the step of the matching ``trial.report``).

    ``beta`` is a float, or any object with ``beta_eff`` (and ``numerator`` / ``denominator``) attributes,
    such as an observation of ``ncap.BetaEffTracker`` or ``ncap.capacitance.beta_eff.CapacitanceResult``.
    Stored in ``trial.user_attrs["ncap_beta_eff"]`` as a list of ``[step, beta_eff, numerator, denominator]``
    (non-finite values as null); reporting a step twice replaces the earlier entry.
    """
    if hasattr(beta, "beta_eff"):
        numerator = getattr(beta, "numerator", numerator) if numerator is None else numerator
        denominator = getattr(beta, "denominator", denominator) if denominator is None else denominator
        beta = beta.beta_eff
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    rows = [r for r in trial.user_attrs.get(BETA_ATTR, []) if r[0] != int(step)]
    rows.append([int(step), _json_number(beta), _json_number(numerator), _json_number(denominator)])
    trial.set_user_attr(BETA_ATTR, sorted(rows))


def report_tracker(trial: optuna.Trial, tracker, step: int | None = None) -> None:
    """Report a tracker's last observation: ``trial.report(accuracy, step)`` and :func:`report_beta` of its
    variant's β_eff, numerator and denominator. ``tracker`` is an ``ncap.BetaEffTracker`` (or anything with
    its ``variant``, ``val_accuracy``, ``beta_eff``, ``numerator`` and ``denominator`` histories);
    ``step`` defaults to the observation's index (``len(tracker) - 1``)."""
    if not tracker.val_accuracy:
        raise ValueError("the tracker has no observation yet: call tracker.observe(...) first")
    step = len(tracker.val_accuracy) - 1 if step is None else step
    v = tracker.variant
    trial.report(tracker.val_accuracy[-1], step)
    report_beta(trial, step, tracker.beta_eff[v][-1], tracker.numerator[v][-1], tracker.denominator[v][-1])


def trial_observations(trial: FrozenTrial) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, values, beta, denominators)``, each shape (T,), of the steps where the trial reported both
    an intermediate value and β_eff, in step order (null entries as NaN)."""
    beta_rows = {int(r[0]): r for r in trial.user_attrs.get(BETA_ATTR, [])}
    steps = sorted(set(trial.intermediate_values) & set(beta_rows))
    as_float = lambda v: float("nan") if v is None else float(v)
    values = np.array([trial.intermediate_values[s] for s in steps], dtype=float)
    beta = np.array([as_float(beta_rows[s][1]) for s in steps])
    den = np.array([as_float(beta_rows[s][3]) for s in steps])
    return np.array(steps, dtype=int), values, beta, den


def _is_pruning_step(step: int, reported: Sequence[int], n_warmup_steps: int, interval_steps: int) -> bool:
    """Optuna's interval convention (its helper is private): prune only at the first report at or after
    each step n_warmup_steps + k·interval_steps."""
    boundary = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    previous = max((s for s in reported if s != step), default=-1)
    return previous < boundary


class CapacitancePruner(BasePruner):
    """Prune a trial once P(its final accuracy beats the best completed trial's) < ``threshold``.

    P(better) = Φ((μ − μ*) / sqrt(σ² + σ*²)) with N(μ, σ²) the Algorithm-1 prediction from the trial's T
    reported (β_eff, accuracy) pairs and N(μ*, σ*²) the same from the first T pairs ``study.best_trial``
    reported (see ``ncap.integrations.rule``).

    Parameters
    ----------
    threshold : float in (0, 1)
        Prune when P(better) is below it. Default 0.05.
    n_startup_trials : int
        No pruning until this many trials have completed (at least one always must: it is the incumbent).
    n_warmup_steps : int
        No pruning before this step; the earliest a trial can be pruned is ``step == n_warmup_steps``.
    interval_steps : int
        Check at most once every this many steps after the warm-up.
    t0, min_points : int
        Algorithm 1's settings: leading observations skipped, fewest usable points for a prediction.
    min_std : float
        Floor on the predictive std.
    prune_on_fallback : bool
        Also prune on the predictor's flagged fallback (the last observed accuracy). Default False.

    A trial whose last reported value is NaN (diverged) is pruned once the warm-up has passed, as
    Optuna's percentile pruners do.
    """

    def __init__(self, threshold: float = 0.05, *, n_startup_trials: int = 1, n_warmup_steps: int = 0,
                 interval_steps: int = 1, t0: int = 1, min_points: int = 3, min_std: float = DEFAULT_MIN_STD,
                 prune_on_fallback: bool = False) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if n_startup_trials < 0 or n_warmup_steps < 0 or t0 < 0:
            raise ValueError("n_startup_trials, n_warmup_steps and t0 must be >= 0")
        if interval_steps < 1 or min_points < 2 or min_std < 0:
            raise ValueError("interval_steps must be >= 1, min_points >= 2 and min_std >= 0")
        self.threshold, self.n_startup_trials, self.n_warmup_steps = threshold, n_startup_trials, n_warmup_steps
        self.interval_steps, self.t0, self.min_points = interval_steps, t0, min_points
        self.min_std, self.prune_on_fallback = min_std, prune_on_fallback

    def verdict(self, study: optuna.Study, trial: FrozenTrial) -> Verdict | None:
        """The rule's outcome for ``trial`` now, or None when the startup / warm-up / interval
        conventions skip this step. ``prune`` returns ``verdict.stop``; call this to log why."""
        if len(study.directions) != 1:
            raise ValueError("CapacitancePruner supports single-objective studies only")
        n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        step = trial.last_step
        if n_complete < max(1, self.n_startup_trials) or step is None or step < self.n_warmup_steps:
            return None
        if not _is_pruning_step(step, list(trial.intermediate_values), self.n_warmup_steps, self.interval_steps):
            return None
        if math.isnan(trial.intermediate_values[step]):
            return Verdict(True, 0.0, None, None, "the last reported value is NaN")
        _, values, beta, den = trial_observations(trial)
        _, inc_values, inc_beta, inc_den = trial_observations(study.best_trial)
        return capacitance_verdict(
            beta, values, inc_beta, inc_values, denominators=den, incumbent_denominators=inc_den,
            maximize=study.direction == StudyDirection.MAXIMIZE, threshold=self.threshold, t0=self.t0,
            min_points=self.min_points, min_std=self.min_std, stop_on_fallback=self.prune_on_fallback)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.verdict(study, trial)
        return verdict is not None and verdict.stop
