"""Successive halving and time budgets (ncap.models.allocation): the rungs, the decisions, the rounds engine on a
deterministic fake runner checked against a brute-force successive halving, and the budget plan."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ncap.models.allocation import Allocation, plan_epochs, run_rounds


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeRun:
    """A candidate whose accuracy at epoch e is ``curve(e)``; an observation every ``grid`` epochs; every epoch
    of training advances ``clock`` by ``cost`` seconds (in steps of ``grid``)."""

    def __init__(self, name, curve, clock=None, cost=1.0, grid=0.5, fail_at=None):
        self.name, self.curve, self.clock, self.cost, self.grid, self.fail_at = name, curve, clock, cost, grid, fail_at
        self.epoch, self.failed, self.halted, self.trained = 0.0, False, None, 0.0

    def advance(self, epoch, pause=None):
        while self.epoch < epoch - 1e-9 and not self.failed:
            if pause is not None and pause():
                return
            self.epoch = round(self.epoch + self.grid, 9)
            self.trained += self.grid
            if self.clock is not None:
                self.clock.t += self.cost * self.grid
            if self.fail_at is not None and self.epoch >= self.fail_at:
                self.failed = True

    def halt(self, reason):
        self.halted = (self.epoch, reason)

    def score(self, epoch, n_val=400):
        obs = [e for e in np.arange(self.grid, self.epoch + 1e-9, self.grid) if e <= epoch + 1e-9]
        if not obs:
            return math.nan, math.nan
        a = self.curve(obs[-1])
        return a, math.sqrt(a * (1 - a) / n_val)


def brute_force_halving(curves: dict, rungs, eta: int) -> tuple[str, dict]:
    """Textbook synchronous successive halving, written independently: (pick, epochs trained per candidate)."""
    alive, trained = list(curves), {k: 0.0 for k in curves}
    for rung in rungs:
        for k in alive:
            trained[k] = rung
        alive = sorted(alive, key=lambda k: -curves[k](rung))  # stable: ties keep the given order
        if rung == rungs[-1]:
            return alive[0], trained
        alive = alive[: max(1, math.ceil(len(alive) / eta))]
        if len(alive) == 1:
            return alive[0], trained
    raise AssertionError


def test_rungs_follow_the_halving_schedule():
    a = Allocation("halving", epochs=4, eta=2, grid=0.5)
    assert a.rungs(4) == (1.0, 2.0, 4.0) and a.survivors(4) == [4, 2]  # 4 -> 2 -> one left at epoch 2
    assert Allocation("halving", epochs=8, eta=2, grid=0.5).rungs(8) == (1.0, 2.0, 4.0, 8.0)
    assert Allocation("halving", epochs=9, eta=3, grid=1).rungs(9) == (1.0, 3.0, 9.0)
    assert Allocation("halving", epochs=4, eta=2, grid=0.5).rungs(1) == (4.0,)
    # rounded up to the observation grid, and never before the rule can score
    assert Allocation("halving", epochs=4, eta=2, grid=1.0).rungs(8) == (1.0, 2.0, 4.0)
    assert Allocation("halving", epochs=4, eta=2, grid=0.5, min_rung=2.0).rungs(4) == (2.0, 4.0)
    assert Allocation("halving", epochs=4, eta=2, grid=0.5, min_epochs=0.5).rungs(4) == (0.5, 1.0, 2.0, 4.0)
    assert Allocation("equal", epochs=3, grid=0.5).rungs(5) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="strategy"):
        Allocation("hyperband")


def test_a_rung_ranks_keeps_the_top_share_and_stops_on_p_best():
    a = Allocation("halving", epochs=4, eta=2, stop_p_best=0.95)
    close = {"a": (0.50, 0.05), "b": (0.52, 0.05), "c": (math.nan, math.nan), "d": (0.49, 0.05)}
    d = a.decide(1.0, close, last=False)
    assert d.ranked == ("b", "a", "d", "c") and d.continuing == ("b", "a") and d.stopped == ("d", "c")
    assert d.reason == "halving" and not d.final
    clear = {"a": (0.90, 0.01), "b": (0.50, 0.01), "c": (0.40, 0.01)}
    d = a.decide(1.0, clear, last=False)
    assert d.reason == "p_best" and d.continuing == ("a",) and d.final and d.p_best["a"] > 0.99
    d = Allocation("halving", epochs=4, eta=2, stop_p_best=1.0).decide(1.0, clear, last=False)
    assert d.reason == "halving" and d.continuing == ("a", "b")  # P(best) stop off: plain halving
    d = Allocation("equal", epochs=4).decide(1.0, clear, last=False)
    assert d.continuing == ("a", "b", "c") and not d.final


@pytest.mark.parametrize("n,eta,epochs", [(4, 2, 4), (5, 2, 4), (8, 2, 8), (9, 3, 9), (6, 3, 6)])
def test_rounds_match_a_brute_force_successive_halving_whatever_the_order(n, eta, epochs):
    rng = np.random.default_rng(n * 10 + eta)
    slopes, starts = rng.uniform(0.01, 0.08, n), rng.uniform(0.2, 0.5, n)
    curves = {f"m{i}": (lambda e, s=slopes[i], b=starts[i]: min(0.99, b + s * e)) for i in range(n)}
    allocation = Allocation("halving", epochs=epochs, eta=eta, grid=0.5, stop_p_best=1.0)
    pick, trained = brute_force_halving(curves, allocation.rungs(n), eta)
    for order in itertools.islice(itertools.permutations(curves), 6):
        runs = [FakeRun(k, curves[k]) for k in order]
        result = run_rounds(runs, allocation, lambda r, e: r.score(e))
        assert result.decisions[-1].ranked[0] == pick
        assert {r.name: r.trained for r in runs} == trained
        stopped = {r.name for r in runs if r.halted[1].startswith("stopped")}
        assert stopped == set(curves) - {pick}  # every other candidate was stopped at a rung
        assert dict(r.halted for r in runs if r.name == pick)[trained[pick]].startswith("picked: the one left")
    equal = n * epochs
    assert sum(trained.values()) <= 0.5 * equal  # what halving saves over equal allocation here


def test_p_best_stops_early_and_a_failed_candidate_drops_out():
    curves = {"good": lambda e: 0.95, "bad": lambda e: 0.30, "worse": lambda e: 0.20, "broken": lambda e: 0.99}
    runs = [FakeRun(k, c, fail_at=0.5 if k == "broken" else None) for k, c in curves.items()]
    result = run_rounds(runs, Allocation("halving", epochs=8, eta=2, grid=0.5), lambda r, e: r.score(e))
    assert [d.reason for d in result.decisions] == ["p_best"] and result.decisions[0].continuing == ("good",)
    assert "broken" not in result.decisions[0].ranked
    assert {r.name: r.trained for r in runs} == {"good": 2.0, "bad": 2.0, "worse": 2.0, "broken": 0.5}


def test_a_deadline_stops_training_and_compares_at_the_epoch_all_reached():
    clock = Clock()
    curves = {f"m{i}": (lambda e, i=i: 0.3 + 0.01 * i * e) for i in range(3)}
    runs = [FakeRun(k, c, clock=clock, cost=10.0) for k, c in curves.items()]  # 10 s per epoch and candidate
    result = run_rounds(runs, Allocation("equal", epochs=6, grid=0.5), lambda r, e: r.score(e), deadline=65.0,
                        clock=clock)
    # 6.5 epochs of training fit in 65 s: 2 epochs each (60 s), then m0 trains 0.5 more before the deadline
    assert clock.t == pytest.approx(65.0) and result.budget_spent_at == 2.0
    assert result.decisions[-1].reason == "time budget" and result.decisions[-1].epoch == 2.0
    assert result.decisions[-1].ranked == ("m2", "m1", "m0")  # scored at epoch 2, not at m0's 2.5
    assert [r.trained for r in runs] == [2.5, 2.0, 2.0]


def test_the_budget_plan_is_the_most_epochs_that_fit():
    fixed, per_epoch = [30.0, 10.0, 20.0], [5.0, 8.0, 2.0]
    equal = Allocation("equal", epochs=20)

    def cost(e):  # equal allocation, brute force
        return sum(fixed) + e * sum(per_epoch)

    for budget in (75.0, 100.0, 140.0, 400.0):
        epochs, est = plan_epochs(fixed, per_epoch, budget, allocation=equal, max_epochs=20)
        assert est == pytest.approx(cost(epochs)) and cost(epochs) <= budget
        assert epochs == 20 or cost(epochs + 1) > budget
    assert plan_epochs(fixed, per_epoch, 1e6, allocation=equal, max_epochs=7)[0] == 7
    with pytest.raises(ValueError, match="less than the estimated 75 s"):
        plan_epochs(fixed, per_epoch, 74.0, allocation=equal, max_epochs=20)
    # halving: 3 candidates, eta 2, 8 epochs -> rungs 2, 4, 8 with 3 then 2 training (the dearest two)
    halving = Allocation("halving", epochs=8, eta=2, grid=0.5)
    epochs, est = plan_epochs(fixed, per_epoch, 1e6, allocation=halving, max_epochs=8)
    assert epochs == 8 and est == pytest.approx(60 + 2 * 15 + 2 * (8 + 5))
