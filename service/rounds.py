"""A ranking whose candidates train in turns: successive halving and time budgets (``ncap.models.allocation``).

    specs → LiveSession each (a CandidateSession started on its first turn) → run_rounds (rung by rung: the
    ranking rule on each candidate's observations so far decides who goes on) → records, ranked by the rungs

The candidates compared at the last rung rank first, by their scores there (with P(best)); those stopped at
an earlier rung follow, later rungs first. Every session is in memory until it stops, so the trained parts of
all candidates are held at once (small with ``trainable`` top or probe). These runs are local to the process
(a Ray executor's tasks cannot be paused and resumed), and an interrupted one starts over.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from ncap.capacitance.ranking_rules import score_run
from ncap.models.allocation import Allocation, RoundsResult, plan_epochs, run_rounds
from ncap.models.harness import Cancelled, CandidateSession
from ncap.models.memory import candidate_failure
from ncap.models.recipe import Recipe
from ncap.service.documents import CandidateRecord

__all__ = ["BUDGET_RESERVE", "LiveSession", "plan_budget", "rank_by_rounds", "run_in_rounds"]
log = logging.getLogger("ncap.ranking")

# share of the time budget kept for what follows training (latency, kept models, plots): training stops at
# (1 - BUDGET_RESERVE) of it
BUDGET_RESERVE = 0.08


class LiveSession:
    """A candidate's :class:`~ncap.models.harness.CandidateSession`, started on its first turn; a failure to
    start (or a diverging loss) makes it ``failed`` with the reason, as a candidate fails in a plain ranking."""

    def __init__(self, spec, data, config: Recipe, hooks, checkpoint: Path | None):
        self.name, self.spec, self.data, self.config, self.hooks = spec.name, spec, data, config, hooks
        self.checkpoint, self.session, self.error = checkpoint, None, None

    @property
    def epoch(self) -> float:
        return 0.0 if self.session is None else self.session.epoch

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.session is not None and self.session.failed)

    def advance(self, epoch: float, pause=None) -> None:
        if self.failed:
            return
        try:
            if self.session is None:
                self.hooks.start(self.name)
                self.session = CandidateSession(
                    self.spec, self.data.train, self.data.val, self.config, progress=self.hooks.progress,
                    on_epoch=self.hooks.on_epoch, should_stop=self.hooks.should_stop, checkpoint=self.checkpoint)
            self.session.advance(epoch, pause=pause)
        except Cancelled:
            raise
        except Exception as exc:  # one candidate's failure fails that candidate only; the traceback goes to the log
            log.exception("candidate %s failed", self.name)
            self.error = candidate_failure(exc)

    def halt(self, reason: str) -> None:
        if self.session is not None:
            self.session.halt(reason)

    def score(self, epoch: float, n_val: int) -> tuple[float, float]:
        """(score, std) under ``config.ranker`` on the observations up to ``epoch``; NaN when there are none."""
        if self.session is None or self.failed:
            return math.nan, math.nan
        s = score_run(self.config.ranker, **self.session.observed(epoch), n_val=n_val, t0=self.config.t0)
        return s.score, s.std

    def record(self, make_record, fail_record) -> CandidateRecord:
        """The candidate's record (its whole trajectory), with where and why it stopped early if it did."""
        if self.error is not None or self.session is None:
            return fail_record(self.name, self.error or "not started: the time budget was spent", self.config)
        session = self.session
        record = make_record(session.finish(), self.config)
        if session.epoch < self.config.epochs - 1e-9 and record.status == "ok":
            record = record.model_copy(update={"stopped_at_epoch": session.epoch,
                                               "stopped_reason": session.halt_reason or "stopped"})
        return record


def run_in_rounds(specs, data, config: Recipe, hooks, *, checkpoint_path, make_record, fail_record,
                  deadline: float | None = None) -> tuple[list[CandidateRecord], RoundsResult]:
    """Train ``specs`` in turns as ``config`` allocates (:class:`~ncap.models.allocation.Allocation`), until
    ``deadline`` (``time.monotonic``) at the latest; the records (in ``specs`` order) and the rungs' decisions.
    ``checkpoint_path(name)`` is where a candidate's model is written (None: not written)."""
    sessions = [LiveSession(s, data, config, hooks, checkpoint_path(s.name)) for s in specs]
    n_val = len(data.val.y)
    result = run_rounds(sessions, Allocation.from_recipe(config), lambda s, epoch: s.score(epoch, n_val),
                        deadline=deadline, seed=config.seed)
    if result.budget_spent_at is not None:
        for s in sessions:
            s.halt(f"the time budget was spent; compared at epoch {result.budget_spent_at:g}")
    records = []
    for s in sessions:
        records.append(s.record(make_record, fail_record))
        hooks.done(records[-1])
    return records, result


def rank_by_rounds(records: list[CandidateRecord], result: RoundsResult) -> list[CandidateRecord]:
    """Fill ``rank``, ``score``, ``score_std`` and ``p_best`` from the rungs' decisions: the last rung's
    candidates first (P(best) from that rung), then each earlier rung's stopped ones (no P(best)), then the
    candidates never compared (failed)."""
    by_name, placed = {r.candidate: r for r in records}, []
    for i, decision in enumerate(reversed(result.decisions)):
        names = decision.ranked if i == 0 else decision.stopped
        for name in names:
            score, std = decision.scores[name]
            p = decision.p_best.get(name) if (i == 0 and decision.p_best) else None
            placed.append(by_name[name].model_copy(update={
                "score": score if math.isfinite(score) else None, "score_std": std if math.isfinite(std) else None,
                "p_best": p}))
    seen = {r.candidate for r in placed}
    placed += [r.model_copy(update={"score": None, "score_std": None, "p_best": None})
               for r in records if r.candidate not in seen]
    return [r.model_copy(update={"rank": k}) for k, r in enumerate(placed, start=1)]


def plan_budget(config: Recipe, candidates, dataset) -> tuple[Recipe, dict]:
    """``config`` with ``epochs`` planned for its time budget (:func:`~ncap.models.allocation.plan_epochs` on the
    measured estimate, :mod:`ncap.models.run_estimate`) and what the plan was; ``ValueError`` when not one
    epoch fits. ``dataset`` is the loaded :class:`~ncap.models.data.ImageDataset`."""
    from ncap.models.memory import DatasetShape
    from ncap.models.run_estimate import estimate_run

    shape = DatasetShape(len(dataset.y), tuple(dataset.x.shape[1:]), len(dataset.class_names))
    t0 = time.perf_counter()
    estimate = estimate_run(candidates, config, shape)
    ok = [c for c in estimate.candidates if not c.problem]
    usable = config.time_budget_s * (1 - BUDGET_RESERVE) - (time.perf_counter() - t0)
    fixed = [c.seconds.get("caching", 0.0) for c in ok]
    per_epoch = [(c.seconds.get("training", 0.0) + c.seconds.get("validation", 0.0)) / config.epochs for c in ok]
    epochs, cost = plan_epochs(fixed, per_epoch, usable, allocation=Allocation.from_recipe(config),
                               max_epochs=config.epochs)
    plan = {"time_budget_s": config.time_budget_s, "planned_epochs": epochs, "estimated_s": round(cost, 1),
            "estimate_s": round(time.perf_counter() - t0, 1)}
    return Recipe.model_validate({**config.to_dict(), "epochs": epochs}), plan
