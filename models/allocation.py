"""How much training each candidate gets: equal allocation, successive halving, and a time budget.

``Recipe.strategy`` picks the allocation; :func:`run_rounds` advances the candidates' sessions
(:class:`ncap.models.harness.CandidateSession`, or anything with the same four members) in turns, rung by
rung, and asks the allocation after each rung which go on:

* ``equal``: every candidate trains for ``epochs``; a rung at every whole epoch, where all go on (rungs only
  matter under a time budget: when it is spent, the candidates are compared at the last epoch all reached).
* ``halving``: successive halving (Jamieson & Talwalkar, AISTATS 2016) with η = ``halving_eta``. With ``n``
  candidates, ``K = ⌈log_η n⌉`` halvings reach one; the first rung is at ``r₀ = halving_min_epochs``
  (``None``: ``epochs / η^K``), the next at ``r₀ η, r₀ η², …`` and the last at ``epochs`` (each rounded up to
  the observation grid, ``1 / evals_per_epoch``). At each rung the candidates are ranked by the ranking rule
  on their observations so far; the best ``⌈m / η⌉`` of the ``m`` compared go on, and any tied with the last
  of them (early in training many candidates sit at the majority class's accuracy). It stops when one is left
  (the pick: nobody trains further to confirm it), at the last rung, or as soon as one candidate's P(best)
  (Monte Carlo over N(score, std²), the ranking's own) reaches ``stop_p_best``.

Unlike Optuna's SuccessiveHalvingPruner (asynchronous: each trial is compared with those that reached the
rung before it), the rungs here are synchronous: every candidate reaches a rung before any is stopped, so
the order of the candidates does not matter, and the schedule of every candidate spans ``epochs`` (a stopped
candidate is a prefix of its full run). ``bench/allocation.py`` measures both on the selection benchmark's
recorded runs.

A time budget (:func:`plan_epochs`) sets ``epochs`` to the most that the run's measured cost estimate
(:mod:`ncap.models.run_estimate`) fits in it; :func:`run_rounds`' deadline stops the training when the budget
is spent anyway, and the candidates are compared at the last epoch all of them reached.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

__all__ = ["Allocation", "RoundsResult", "RungDecision", "Session", "plan_epochs", "run_rounds"]

_EPS = 1e-9


def _up_to_grid(epoch: float, grid: float) -> float:
    return max(grid, math.ceil(epoch / grid - _EPS) * grid)


@dataclass(frozen=True)
class RungDecision:
    """What one rung decided: the compared candidates ranked (best first) with their (score, std), P(best)
    where the rule has a std, who goes on and who stops, and why it stopped there (``reason``: ``halving``,
    ``all go on`` (equal allocation), ``p_best``, ``last rung``, ``time budget``)."""

    epoch: float
    ranked: tuple[str, ...]
    scores: dict[str, tuple[float, float]]
    p_best: dict[str, float] | None
    continuing: tuple[str, ...]
    stopped: tuple[str, ...]
    reason: str

    @property
    def final(self) -> bool:
        """No candidate trains further after this rung."""
        return self.reason in ("p_best", "last rung", "time budget") or (self.reason == "halving"
                                                                         and len(self.continuing) <= 1)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "ranked": list(self.ranked), "continuing": list(self.continuing),
                "stopped": list(self.stopped), "reason": self.reason,
                "scores": {k: [None if not math.isfinite(v) else v for v in sd] for k, sd in self.scores.items()},
                "p_best": self.p_best}


@dataclass(frozen=True)
class Allocation:
    """An allocation of training epochs across candidates (see the module docstring).

    ``grid`` is the observation interval in epochs (rungs fall on it); ``min_rung`` the earliest epoch the
    ranking rule can score (β_eff's prediction needs t0 + 3 observations)."""

    strategy: str = "equal"  # "equal" | "halving"
    epochs: float = 4.0
    eta: int = 2
    min_epochs: float | None = None
    grid: float = 1.0
    stop_p_best: float = 0.95
    min_rung: float = 0.0

    def __post_init__(self) -> None:
        if self.strategy not in ("equal", "halving"):
            raise ValueError(f"unknown strategy {self.strategy!r}; choose equal or halving")
        if self.eta < 2 or self.epochs <= 0 or self.grid <= 0:
            raise ValueError(f"bad allocation: eta={self.eta}, epochs={self.epochs}, grid={self.grid}")

    @classmethod
    def from_recipe(cls, recipe) -> Allocation:
        """The allocation a :class:`~ncap.models.recipe.Recipe` asks for (its ``strategy``, ``halving_eta``,
        ``halving_min_epochs``, ``stop_p_best``, ``epochs`` and observation grid)."""
        from ncap.capacitance.predictor import MIN_POINTS

        grid = 1.0 / recipe.evals_per_epoch
        min_rung = grid * (recipe.t0 + MIN_POINTS) if recipe.ranker == "beta_eff" else grid
        return cls(strategy=recipe.strategy, epochs=float(recipe.epochs), eta=recipe.halving_eta,
                   min_epochs=recipe.halving_min_epochs, grid=grid, stop_p_best=recipe.stop_p_best,
                   min_rung=min(min_rung, float(recipe.epochs)))

    def rungs(self, n: int) -> tuple[float, ...]:
        """The epochs at which ``n`` candidates are compared, increasing; the last is ``epochs``."""
        if self.strategy == "equal" or n <= 1:
            whole = [float(e) for e in range(1, math.ceil(self.epochs - _EPS))]
            return (*whole, self.epochs) if self.strategy == "equal" else (self.epochs,)
        halvings, reach = 0, 1
        while reach < n:
            reach, halvings = reach * self.eta, halvings + 1
        first = self.min_epochs if self.min_epochs is not None else self.epochs / self.eta ** halvings
        rung, rungs = max(first, self.min_rung), []
        while rung < self.epochs - _EPS:
            rungs.append(min(_up_to_grid(rung, self.grid), self.epochs))
            rung *= self.eta
        return tuple(sorted(set(rungs) | {self.epochs}))

    def survivors(self, n: int) -> list[int]:
        """How many of ``n`` candidates train into each rung (the first is ``n``): the most a run can cost."""
        alive, out = n, []
        for _ in self.rungs(n):
            out.append(alive)
            alive = alive if self.strategy == "equal" else max(1, math.ceil(alive / self.eta))
            if alive == 1 and self.strategy == "halving":
                break
        return out

    def decide(self, epoch: float, scores: Mapping[str, tuple[float, float]], *, last: bool,
               seed: int = 0) -> RungDecision:
        """Rank the candidates at a rung (NaN scores last, ties in the given order) and say who goes on."""
        from ncap.capacitance.predictor import p_best

        names = list(scores)
        means = np.array([scores[k][0] for k in names], float)
        stds = np.array([scores[k][1] for k in names], float)
        order = sorted(range(len(names)), key=lambda i: (not np.isfinite(means[i]), -np.nan_to_num(means[i])))
        ranked = tuple(names[i] for i in order)
        ok = np.isfinite(means)
        probs = None
        if ok.sum() >= 2 and np.isfinite(stds[ok]).all():
            probs = dict(zip(names, (float(p) for p in p_best(means, stds, seed=seed))))
        if last:
            keep, reason = ranked[:1], "last rung"
        elif self.strategy == "equal":
            keep, reason = ranked, "all go on"
        elif probs is not None and self.stop_p_best < 1 and max(probs.values()) >= self.stop_p_best:
            keep, reason = (max(probs, key=probs.get),), "p_best"
        else:  # the best ceil(m / eta), and any tied with the last of them (ties are not broken by the order)
            n = max(1, math.ceil(len(ranked) / self.eta))
            keep = tuple(k for i, k in enumerate(ranked) if i < n or scores[k][0] == scores[ranked[n - 1]][0])
            reason = "halving"
        stopped = tuple(k for k in ranked if k not in keep) if reason in ("halving", "p_best") else ()
        return RungDecision(epoch, ranked, {k: scores[k] for k in ranked}, probs, tuple(keep), stopped, reason)


class Session(Protocol):
    """What :func:`run_rounds` advances: a candidate's training run, resumable."""

    name: str

    @property
    def epoch(self) -> float: ...  # epochs trained so far

    @property
    def failed(self) -> bool: ...

    def advance(self, epoch: float, pause: Callable[[], bool] | None = None) -> None: ...

    def halt(self, reason: str) -> None: ...


@dataclass
class RoundsResult:
    """The rungs' decisions in order and, when the time budget ended the run, the epoch of the comparison."""

    decisions: list[RungDecision] = field(default_factory=list)
    budget_spent_at: float | None = None

    def to_dict(self) -> dict:
        return {"decisions": [d.to_dict() for d in self.decisions], "budget_spent_at": self.budget_spent_at}


def run_rounds(sessions: Sequence[Session], allocation: Allocation,
               score: Callable[[Session, float], tuple[float, float]], *, deadline: float | None = None,
               clock: Callable[[], float] = time.monotonic, seed: int = 0,
               on_decision: Callable[[RungDecision], None] | None = None) -> RoundsResult:
    """Advance ``sessions`` rung by rung as ``allocation`` says; ``score(session, epoch)`` is the ranking rule
    on the session's observations up to ``epoch``. A failed session drops out. At ``deadline`` (on ``clock``)
    training stops, and the candidates still in are compared at the last epoch all of them reached; a
    candidate that reached none is ranked last. Returns the decisions; stopped sessions are ``halt``-ed."""
    spent = (lambda: False) if deadline is None else (lambda: clock() >= deadline)
    alive, out = list(sessions), RoundsResult()
    rungs = allocation.rungs(len(alive))
    for i, rung in enumerate(rungs):
        for s in alive:
            if spent():
                break
            s.advance(rung, pause=spent)
        alive = [s for s in alive if not s.failed]
        if not alive:
            break
        reached = min(s.epoch for s in alive)  # whole steps: the rung rounded to the nearest step
        cut = spent() and reached < rung - _EPS  # the budget ran out before every candidate reached the rung
        at = reached
        decision = allocation.decide(at, {s.name: score(s, at) for s in alive}, last=cut or i == len(rungs) - 1,
                                     seed=seed)
        if cut:
            decision = RungDecision(at, decision.ranked, decision.scores, decision.p_best, decision.continuing,
                                    decision.stopped, "time budget")
            out.budget_spent_at = at
        out.decisions.append(decision)
        if on_decision is not None:
            on_decision(decision)
        for s in alive:
            if s.name in decision.stopped or (decision.final and decision.reason in ("halving", "p_best")):
                s.halt(_halt_reason(decision, s.name))
        alive = [s for s in alive if s.name in decision.continuing]
        if decision.final:
            break
    return out


def _halt_reason(decision: RungDecision, name: str) -> str:
    """Why ``name`` trains no further after ``decision`` (stopped, or picked before the last rung)."""
    at, m = f"epoch {decision.epoch:.3g}", len(decision.ranked)
    if decision.reason == "p_best":
        winner = decision.continuing[0]
        why = f"P(best) of {winner} reached {decision.p_best[winner]:.3f} at {at}"
        return f"picked: {why}" if name == winner else f"stopped: {why}"
    if name in decision.continuing:
        return f"picked: the one left at {at}"
    return (f"stopped by successive halving: ranked {decision.ranked.index(name) + 1} of {m} at {at}; "
            f"{len(decision.continuing)} went on")


def plan_epochs(fixed_s: Sequence[float], per_epoch_s: Sequence[float], budget_s: float, *,
                allocation: Allocation, max_epochs: int) -> tuple[int, float]:
    """The most whole epochs (≤ ``max_epochs``) whose estimated cost fits ``budget_s``, and that cost.

    Candidate ``i`` costs ``fixed_s[i]`` (building its activation cache) plus ``per_epoch_s[i]`` per epoch it
    trains; under halving the survivors of each rung are taken to be the most expensive candidates, so the
    estimate is an upper bound. Raises ``ValueError`` when not even one epoch fits, with the cost it needs."""
    fixed, per = np.asarray(fixed_s, float), np.sort(np.asarray(per_epoch_s, float))[::-1]

    def cost(epochs: int) -> float:
        plan = replace(allocation, epochs=float(epochs), min_rung=min(allocation.min_rung, float(epochs)))
        total, before = float(fixed.sum()), 0.0
        for rung, alive in zip(plan.rungs(len(per)), plan.survivors(len(per))):
            total += (rung - before) * float(per[:alive].sum())
            before = rung
        return total

    if cost(1) > budget_s:
        raise ValueError(f"the time budget of {budget_s:.0f} s is less than the estimated {cost(1):.0f} s that one "
                         f"epoch of every candidate takes ({fixed.sum():.0f} s of it caching activations): raise "
                         "the budget, or rank fewer or smaller candidates")
    best = 1
    for epochs in range(2, max_epochs + 1):
        if cost(epochs) > budget_s:
            break
        best = epochs
    return best, cost(best)
