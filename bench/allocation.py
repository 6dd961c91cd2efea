"""Allocation benchmark (issue 23): the compute it takes to pick a model within noise of the truth's best.

ncap's successive halving against equal allocation and Optuna's pruners, on benchmark v3's recorded runs:

    python -m ncap.bench.allocation [--tasks elpv-mono,elpv-poly] [--out bench/results] [--permutations 20]
                                    [--subpools 20] [--rules val_acc,beta_eff] [--min-candidates 4]

Writes ``allocation.json``, ``allocation.md`` and ``allocation.png`` to ``--out`` (about 3 min on 2 cores,
half of it counting the candidates' FLOPs). Rerun it as more v3 records land: it uses what is complete.

Data. Selection benchmark v3's committed records (``bench/results/selection-v3/runs/``, read through
``ncap.bench.selection_v3.load_record``). A (task, candidate) is used when all five truth seeds are recorded;
a task when at least ``--min-candidates`` of its candidates are (fewer than the design's: a *partial pool*,
said so). Only seed 0 observes along the way (4 times per epoch up to epoch 5, then once per epoch, 10 epochs,
warm-up + cosine over the 10 epochs); seeds 1-4 observe only the end. So every method replays the seed-0 runs,
and the truth it is judged against is the mean final accuracy of seeds 1-4 (leave-one-out: the observations
that choose are never the ones that judge).

Replay. A candidate trained to epoch e of the 10-epoch schedule is exactly the prefix (epoch <= e) of its
recorded run, so stopping a candidate early is replayed exactly. :class:`ReplaySession` follows
``ncap.models.allocation.Session``: ``advance(epoch)`` moves to the first observation at or after ``epoch``
and charges the run's FLOPs up to there. Its ``epoch`` is the recipe's nominal observation epoch (0.5), where
a real session reports the whole step it reached (4/7 with 7 steps per epoch): the replay measures the
halving as designed, not how ``run_rounds`` reads step-rounded epochs. Rungs after epoch 5 that fall between
whole epochs (none in the grid below) train to the next whole epoch: charged, so conservative for ncap.

Methods, each replayed on the same candidate orders (``--permutations`` seeded permutations per task; the
first is the design's order):

* equal allocation: every candidate trains the 10 epochs (the reference compute, 100 %), and its prefixes
  (the first E epochs *of the 10-epoch schedule*, not a schedule of E epochs), through ``run_rounds`` with
  ``strategy="equal"``;
* ncap halving: ``ncap.models.allocation.run_rounds`` itself, its ``Allocation`` made by
  ``Allocation.from_recipe`` from a ``Recipe`` (10 epochs, 4 observations per epoch), over
  eta x halving_min_epochs x stop_p_best, ranked by the ranking rule (``ncap.capacitance.ranking_rules``) on
  the observations up to the rung; pick = the last rung's survivor;
* Optuna's ``SuccessiveHalvingPruner`` and ``HyperbandPruner`` over min_resource and reduction_factor: one
  trial per candidate, in order, each to completion or pruning before the next (Optuna's sequential
  ask-and-tell: the pruners compare a trial with those before it, so the order matters); the step is the
  nominal epoch in quarter epochs (1 step = 1/4 epoch, 40 = the whole run); every observation's validation
  accuracy is reported; pick = the best completed trial by its final accuracy.

Compute: FLOPs, ``ncap.bench.evaluate_v3.run_cost`` (``bench/run_flops.py``: a candidate's activation
cache once, then training and observation passes per epoch), summed over the candidates, as a fraction of
equal allocation's. Pick quality (``ncap.bench.decisive``, v3's own definitions): *within noise* = the pick is
the truth's best or the pair (pick, best) is not Welch-decisive at 97.5 %; regret = best true mean - the
pick's, in accuracy points. A method's rate and means are averaged over its replays per task, then over tasks.

Halves (``--subpools``): besides the whole pools, seeded random halves of each pool (ceil(n/2) candidates in a
random order), each a selection problem with its own truth's best. A task gives one selection problem (the
orders only vary tie-breaking and Optuna's asynchronous comparisons), so the halves give finer rates; they are
a robustness check, not the verdict.

Choosing the settings reported: "matches equal allocation" = a within-noise rate at least equal allocation's
on the same replays; a family's chosen setting is its cheapest matching one (none matching: its best rate).
ncap's default (among the product rule's settings) and Optuna's best pruner are both chosen so on the
development tasks and the verdict is read on the held-out ones (v3's roles, ``bench.tasks.TASKS_V3``); with no
task of either role, the choice is in-sample, and said so. Target (issue 23): ncap's default matches equal
allocation at <= 40 % of its compute and with less compute than Optuna's best pruner. v2's records are not
used: v3's are ready.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ncap.bench import decisive
from ncap.bench.design_v3 import CANDIDATES, TASKS, TRUTH_EPOCHS, TRUTH_SEEDS
from ncap.capacitance.ranking_rules import DEFAULT_RULE, score_run
from ncap.models.allocation import Allocation, run_rounds

__all__ = ["Pool", "ReplaySession", "Setting", "benchmark", "load_pool", "main", "replay", "settings"]

RESULTS = Path(__file__).parent / "results"
REPLAY_SEED = 0  # the only truth seed observed along the way (bench/design_v3.py)
OBS_PER_EPOCH = 4  # seed 0's observations per epoch up to design_v3.DENSE_UNTIL: the rung grid, Optuna's step
TARGET_FRACTION = 0.40
MIN_CANDIDATES = 4
PREFIX_EPOCHS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.0)
NCAP_GRID = {"eta": (2, 3), "min_epochs": (None, 0.5, 1.0, 2.0), "stop_p_best": (0.95, 1.0)}
SHA_GRID = {
    "min_resource": (1, 4, 8),
    "reduction_factor": (2, 3, 4),
}  # min_resource in steps: 1/4, 1, 2 epochs
HYPERBAND_GRID = {"min_resource": (1, 4, 8), "reduction_factor": (2, 3)}
_EPS = 1e-9


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Pool:
    """One task's candidates: their seed-0 records, cumulative FLOPs and the leave-one-out truth.

    runs : n records (seed 0), each with T_i observations
    flops : n arrays (T_i,), FLOPs of run i up to and including observation k
    truth : (n, k) final accuracies of the other truth seeds (the judge)
    """

    task: str
    role: str  # "dev" | "held out"
    names: tuple[str, ...]
    runs: list[dict]
    flops: list[np.ndarray]
    truth: np.ndarray
    n_val: int
    skipped: list[str] = field(default_factory=list)  # candidates left out: a truth seed is missing
    quality: tuple[np.ndarray, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        """Per candidate as the pick: (within noise (n,) bool, regret (n,) accuracy points), by
        ``bench.decisive``."""
        within, regret = [], []
        for i in range(len(self.names)):
            onehot = np.eye(len(self.names))[i]
            within.append(decisive.pick_within_noise(onehot, self.truth))
            regret.append(decisive.top1_regret(onehot, self.truth)[0])
        self.quality = (np.array(within, bool), np.array(regret, float))

    def subset(self, idx: Sequence[int]) -> Pool:
        """The pool of the candidates ``idx`` (in that order), with its own truth's best."""
        idx = [int(i) for i in idx]
        return Pool(
            self.task,
            self.role,
            tuple(self.names[i] for i in idx),
            [self.runs[i] for i in idx],
            [self.flops[i] for i in idx],
            self.truth[idx],
            self.n_val,
            self.skipped,
        )

    @property
    def equal_flops(self) -> float:
        """Equal allocation's compute: every candidate's whole recorded run."""
        return float(sum(f[-1] for f in self.flops))


def load_pool(task: str, min_candidates: int = MIN_CANDIDATES) -> tuple[Pool | None, list[str]]:
    """The pool of ``task`` from the committed v3 records, or None when fewer than ``min_candidates`` have
    every truth seed; and the candidates skipped."""
    from ncap.bench.rankers import final_accuracy
    from ncap.bench.selection_v3 import load_record
    from ncap.bench.tasks import TASKS_V3

    names, runs, truth, skipped = [], [], [], []
    for cand in CANDIDATES:
        docs = [load_record(task, cand, f"seed{s}") for s in TRUTH_SEEDS]
        if any(d is None for d in docs):
            skipped.append(cand.name)
            continue
        names.append(cand.name)
        runs.append(docs[TRUTH_SEEDS.index(REPLAY_SEED)])
        truth.append([final_accuracy(d) for s, d in zip(TRUTH_SEEDS, docs) if s != REPLAY_SEED])
    if len(names) < min_candidates:
        return None, skipped
    spec = TASKS_V3[task]
    return Pool(
        task,
        "held out" if spec.held_out else "dev",
        tuple(names),
        runs,
        [cumulative_flops(r) for r in runs],
        np.array(truth, float),
        spec.n_val,
        skipped,
    ), skipped


def cumulative_flops(run: dict) -> np.ndarray:
    """(T,) FLOPs of ``run`` up to each of its observations (``ncap.bench.evaluate_v3.run_cost``)."""
    from ncap.bench.evaluate_v3 import run_cost

    return np.array([run_cost(run, k) for k in range(len(run["epoch"]))], float)


def nominal_epochs(run: dict) -> np.ndarray:
    """(T,) the epochs the recipe asked to observe at (the recorded ones are rounded to whole steps)."""
    asked = (run.get("recipe") or {}).get("observe_at_epochs")
    return np.asarray(asked if asked and len(asked) == len(run["epoch"]) else run["epoch"], float)


# ------------------------------------------------------------------------------------------------ replay
class ReplaySession:
    """A recorded run replayed as an ``ncap.models.allocation.Session`` (module docstring).

    run : the record (per-observation ``epoch``, ``val_accuracy``, ``train_loss``, ``beta_eff``, ...)
    flops : (T,) cumulative FLOPs up to each observation
    """

    def __init__(self, name: str, run: dict, flops: np.ndarray):
        self.name, self.run, self.cumulative = name, run, np.asarray(flops, float)
        self.nominal = nominal_epochs(run)
        self.position = -1  # index of the last observation made; -1: none yet
        self.halt_reason: str | None = None
        self._failed = False

    @property
    def epoch(self) -> float:
        """Epochs trained so far (nominal)."""
        return float(self.nominal[self.position]) if self.position >= 0 else 0.0

    @property
    def failed(self) -> bool:
        return self._failed

    def advance(self, epoch: float, pause: Callable[[], bool] | None = None) -> None:
        """Train to the first observation at or after ``epoch``; past the end of a failed run: fail."""
        if self.halt_reason is not None:
            raise RuntimeError(f"{self.name} was halted ({self.halt_reason}) and advanced again")
        i = int(np.searchsorted(self.nominal, epoch - _EPS))
        if i >= len(self.nominal):
            self._failed = self.run.get("status", "ok") != "ok"
            i = len(self.nominal) - 1
        self.position = max(self.position, i)

    def halt(self, reason: str) -> None:
        self.halt_reason = reason

    @property
    def flops(self) -> float:
        """FLOPs spent so far (0 before the first observation: nothing was built)."""
        return float(self.cumulative[self.position]) if self.position >= 0 else 0.0

    def seen(self, at: float) -> int:
        """How many observations a session advanced to epoch ``at`` has made."""
        return min(int(np.searchsorted(self.nominal, at - _EPS)) + 1, self.position + 1)


def rule_score(rule: str, run: dict, k: int, n_val: int) -> tuple[float, float]:
    """(score, std) of ``rule`` on the first ``k`` observations of ``run`` (NaN, NaN: cannot be scored)."""
    recipe = run.get("recipe") or {}
    variant = recipe.get("variant", "support")
    try:
        s = score_run(
            rule,
            beta_eff=run.get("beta_eff", {}).get(variant, [])[:k],
            val_accuracy=run["val_accuracy"][:k],
            train_loss=run["train_loss"][:k],
            beta_denominator=run.get("beta_denominator", {}).get(variant, [])[:k],
            n_val=n_val,
            t0=recipe.get("t0", 1),
        )
    except ValueError:
        return math.nan, math.nan
    return float(s.score), float(s.std)


@dataclass(frozen=True)
class Replay:
    """One replay's outcome: the pick (index into the pool, -1 = none), FLOPs spent, epochs trained summed
    over candidates, and how it ended (ncap: the last rung's reason; Optuna: how many trials were
    pruned)."""

    pick: int
    flops: float
    epochs: float
    ended: str


def _sessions(pool: Pool, order: Sequence[int]) -> list[ReplaySession]:
    return [ReplaySession(pool.names[i], pool.runs[i], pool.flops[i]) for i in order]


def replay_rounds(
    pool: Pool, allocation: Allocation, rule: str, order: Sequence[int], seed: int = 0
) -> Replay:
    """ncap's ``run_rounds`` on the pool's recorded runs, candidates in ``order``."""
    sessions = _sessions(pool, order)
    result = run_rounds(
        sessions, allocation, lambda s, at: rule_score(rule, s.run, s.seen(at), pool.n_val), seed=seed
    )
    last = result.decisions[-1] if result.decisions else None
    pick = pool.names.index(last.continuing[0]) if last and last.continuing else -1
    return Replay(
        pick,
        sum(s.flops for s in sessions),
        sum(s.epoch for s in sessions),
        last.reason if last else "no candidate",
    )


def replay_optuna(
    pool: Pool, make_pruner: Callable[[], object], order: Sequence[int], study_name: str
) -> Replay:
    """Optuna's sequential ask-and-tell over the pool's recorded runs (module docstring): each trial reports
    every observation's validation accuracy at its step (quarter epochs) and stops when the pruner says
    so."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        pruner=make_pruner(),
        study_name=study_name,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    sessions, of_trial, pruned = _sessions(pool, order), {}, 0
    for s in sessions:
        trial = study.ask()
        of_trial[trial.number] = pool.names.index(s.name)
        state = _run_trial(trial, s)
        if state == "complete":
            study.tell(trial, float(s.run["val_accuracy"][s.position]))
        else:
            pruned += state == "pruned"
            study.tell(
                trial,
                state=optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL,
            )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pick = of_trial[study.best_trial.number] if done else -1
    return Replay(pick, sum(s.flops for s in sessions), sum(s.epoch for s in sessions), f"{pruned} pruned")


def _run_trial(trial, session: ReplaySession) -> str:
    """Report the session's observations one by one: "complete", "pruned" or "failed"."""
    for k, epoch in enumerate(session.nominal):
        session.advance(epoch)
        acc = float(session.run["val_accuracy"][k])
        if not math.isfinite(acc):
            return "failed"
        trial.report(acc, round(epoch * OBS_PER_EPOCH))
        if trial.should_prune():
            session.halt("pruned")
            return "pruned"
    return "complete" if session.run.get("status", "ok") == "ok" else "failed"


# ------------------------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class Setting:
    """One method's setting: ``family`` (equal, equal prefix, ncap halving, optuna SHA, optuna hyperband) and
    its parameters, in order."""

    family: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={'default' if v is None else v}" for k, v in self.params) or "-"

    @property
    def key(self) -> str:
        return f"{self.family}: {self.label}"


def settings(rules: Sequence[str] = (DEFAULT_RULE,)) -> list[Setting]:
    """Every setting the benchmark replays (module docstring's grids)."""
    out = [Setting("equal", (("epochs", float(TRUTH_EPOCHS)),))]
    out += [Setting("equal prefix", (("epochs", e),)) for e in PREFIX_EPOCHS]
    out += [
        Setting("ncap halving", (("eta", eta), ("min_epochs", m), ("stop_p_best", p), ("rule", rule)))
        for rule in rules
        for eta in NCAP_GRID["eta"]
        for m in NCAP_GRID["min_epochs"]
        for p in NCAP_GRID["stop_p_best"]
    ]
    out += [
        Setting("optuna SHA", (("min_resource", m), ("reduction_factor", rf)))
        for m in SHA_GRID["min_resource"]
        for rf in SHA_GRID["reduction_factor"]
    ]
    out += [
        Setting("optuna hyperband", (("min_resource", m), ("reduction_factor", rf)))
        for m in HYPERBAND_GRID["min_resource"]
        for rf in HYPERBAND_GRID["reduction_factor"]
    ]
    return out


def ncap_allocation(setting: Setting) -> Allocation:
    """The ``Allocation`` ncap runs for ``setting``: ``Allocation.from_recipe`` of a 10-epoch recipe observing
    ``OBS_PER_EPOCH`` times per epoch, with the ``Recipe`` defaults otherwise (equal prefixes: the same,
    compared at ``epochs``). The recipe is given as the attributes ``from_recipe`` reads."""
    from types import SimpleNamespace

    from ncap.models.recipe import Recipe

    p = {"eta": 2, "min_epochs": None, "stop_p_best": 1.0, "rule": DEFAULT_RULE, **dict(setting.params)}
    recipe = SimpleNamespace(
        strategy="equal" if setting.family.startswith("equal") else "halving",
        epochs=TRUTH_EPOCHS,
        evals_per_epoch=OBS_PER_EPOCH,
        t0=Recipe().t0,
        halving_eta=p["eta"],
        halving_min_epochs=p["min_epochs"],
        stop_p_best=p["stop_p_best"],
        ranker=p["rule"],
    )
    alloc = Allocation.from_recipe(recipe)
    if setting.family.startswith("equal"):
        epochs = float(p["epochs"])
        return replace(alloc, epochs=epochs, min_rung=min(alloc.min_rung, epochs))
    return alloc


def optuna_pruner(setting: Setting) -> Callable[[], object]:
    """A factory of the Optuna pruner of ``setting`` (steps in quarter epochs; the whole run is 40)."""
    import optuna

    p = dict(setting.params)
    if setting.family == "optuna SHA":
        return lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p["min_resource"], reduction_factor=p["reduction_factor"]
        )
    return lambda: optuna.pruners.HyperbandPruner(
        min_resource=p["min_resource"],
        max_resource=TRUTH_EPOCHS * OBS_PER_EPOCH,
        reduction_factor=p["reduction_factor"],
    )


def replay(pool: Pool, setting: Setting, order: Sequence[int], k: int = 0) -> Replay:
    """Replay ``setting`` on ``pool`` with the candidates in ``order`` (replay number ``k``: the Monte Carlo
    seed of P(best), the Optuna study's name, which places Hyperband's trials in brackets)."""
    if setting.family.startswith("optuna"):
        return replay_optuna(pool, optuna_pruner(setting), order, f"{pool.task}-order{k}")
    rule = dict(setting.params).get("rule", DEFAULT_RULE)
    return replay_rounds(pool, ncap_allocation(setting), rule, order, seed=k)


def orders(n: int, count: int) -> list[np.ndarray]:
    """``count`` candidate orders of ``n``: the design's, then seeded permutations."""
    return [np.arange(n)] + [np.random.default_rng(k).permutation(n) for k in range(1, count)]


Problem = tuple[Pool, np.ndarray]  # a selection problem: a pool and the order its candidates come in


def full_problems(pool: Pool, count: int) -> list[Problem]:
    """The whole pool in ``count`` orders (:func:`orders`)."""
    return [(pool, order) for order in orders(len(pool.names), count)]


def subpool_problems(pool: Pool, count: int) -> list[Problem]:
    """``count`` seeded random halves (ceil(n / 2) candidates) of the pool, each in a random order: more
    selection problems, each with its own truth's best."""
    size = math.ceil(len(pool.names) / 2)
    return [
        (pool.subset(np.random.default_rng(1000 + k).permutation(len(pool.names))[:size]), np.arange(size))
        for k in range(count)
    ]


# ------------------------------------------------------------------------------------------------ scoring
def outcome(pool: Pool, result: Replay, k: int) -> dict:
    """One replay as the JSON reports it: pick, within noise, regret (points), compute fraction of equal."""
    within, regret = pool.quality
    ok = result.pick >= 0
    return {
        "order": k,
        "pick": pool.names[result.pick] if ok else None,
        "within_noise": bool(ok and within[result.pick]),
        "regret_pt": float(regret[result.pick]) if ok else float("nan"),
        "fraction": result.flops / pool.equal_flops,
        "epoch_fraction": result.epochs / (len(pool.names) * TRUTH_EPOCHS),
        "ended": result.ended,
    }


def summarise(per_task: dict[str, list[dict]], tasks: Sequence[str]) -> dict | None:
    """Means over each task's replays, then over ``tasks``: compute fraction, within-noise rate, regret."""
    rows = [per_task[t] for t in tasks if per_task.get(t)]
    if not rows:
        return None

    def mean(key: str) -> float:
        return float(np.mean([np.nanmean([r[key] for r in replays]) for replays in rows]))

    return {
        "fraction": mean("fraction"),
        "within_noise": mean("within_noise"),
        "regret_pt": mean("regret_pt"),
        "epoch_fraction": mean("epoch_fraction"),
        "tasks": len(rows),
        "replays": sum(len(r) for r in rows),
    }


def run_all(
    problems: dict[str, list[Problem]],
    every: Sequence[Setting],
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, list[dict]]]:
    """{setting key: {task: [outcome per problem]}} for every setting on every task's problems."""
    out: dict[str, dict[str, list[dict]]] = {s.key: {} for s in every}
    for task, todo in problems.items():
        for s in every:
            out[s.key][task] = [
                outcome(pool, replay(pool, s, order, k), k) for k, (pool, order) in enumerate(todo)
            ]
        whole = all(pool.names == todo[0][0].names for pool, _ in todo)
        progress(
            f"{task}: {len(every)} settings x {len(todo)} {'orders' if whole else 'random halves'} replayed"
        )
    return out


def choose(summaries: dict[str, dict], keys: Sequence[str], reference: dict) -> str:
    """The cheapest of ``keys`` whose within-noise rate is at least ``reference``'s; none: the best rate
    (then the cheapest)."""
    matching = [k for k in keys if summaries[k]["within_noise"] >= reference["within_noise"] - _EPS]
    if matching:
        return min(matching, key=lambda k: (summaries[k]["fraction"], summaries[k]["regret_pt"]))
    return max(keys, key=lambda k: (summaries[k]["within_noise"], -summaries[k]["fraction"]))


# ------------------------------------------------------------------------------------------------ verdict
def task_sets(pools: Sequence[Pool]) -> tuple[list[str], list[str], bool]:
    """(tasks the settings are chosen on, tasks the verdict is read on, whether that is in-sample)."""
    dev = [p.task for p in pools if p.role == "dev"]
    held = [p.task for p in pools if p.role != "dev"]
    if dev and held:
        return dev, held, False
    every = [p.task for p in pools]
    return every, every, True


def choices(rows: dict[str, dict], every: Sequence[Setting], tasks: Sequence[str]) -> dict[str, str]:
    """ncap's default (the product's rule) and Optuna's best pruner, each chosen on ``tasks`` against equal
    allocation (:func:`choose`)."""
    summaries = {s.key: summarise(rows[s.key], tasks) for s in every}
    equal = summaries[Setting("equal", (("epochs", float(TRUTH_EPOCHS)),)).key]
    ncap = [s.key for s in every if s.family == "ncap halving" and dict(s.params)["rule"] == DEFAULT_RULE]
    optuna = [s.key for s in every if s.family.startswith("optuna")]
    return {"ncap": choose(summaries, ncap, equal), "optuna": choose(summaries, optuna, equal)}


def verdict(rows: dict[str, dict], chosen: dict[str, str], tasks: Sequence[str]) -> dict:
    """Issue 23's target on ``tasks``: ncap's default matches equal allocation's within-noise rate at <= 40 %
    of its compute, and with less compute than Optuna's best pruner."""
    equal = summarise(rows[Setting("equal", (("epochs", float(TRUTH_EPOCHS)),)).key], tasks)
    ncap, optuna = summarise(rows[chosen["ncap"]], tasks), summarise(rows[chosen["optuna"]], tasks)
    checks = {
        "matches_equal_quality": ncap["within_noise"] >= equal["within_noise"] - _EPS,
        "at_most_40_percent": ncap["fraction"] <= TARGET_FRACTION + _EPS,
        "less_than_optuna_best": ncap["fraction"] < optuna["fraction"],
    }
    return {
        "tasks": list(tasks),
        "met": all(checks.values()),
        "checks": checks,
        "equal": equal,
        "ncap": ncap,
        "optuna": optuna,
    }


def evaluate(
    pools: Sequence[Pool],
    every: Sequence[Setting],
    permutations: int,
    subpools: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Every setting replayed on every pool (``permutations`` orders) and on ``subpools`` random halves of it,
    summarised per role; the chosen settings and the verdicts (on the whole pools)."""
    rows = run_all({p.task: full_problems(p, permutations) for p in pools}, every, progress)
    halves = (
        run_all({p.task: subpool_problems(p, subpools) for p in pools}, every, progress) if subpools else {}
    )
    choose_on, judge_on, in_sample = task_sets(pools)
    roles = {
        "all": [p.task for p in pools],
        "dev": [p.task for p in pools if p.role == "dev"],
        "held_out": [p.task for p in pools if p.role != "dev"],
    }
    chosen = choices(rows, every, choose_on)
    table = [
        {
            "family": s.family,
            "setting": s.label,
            "key": s.key,
            "params": dict(s.params),
            "summary": {role: summarise(rows[s.key], ts) for role, ts in roles.items()},
            "subpools": {role: summarise(halves[s.key], ts) for role, ts in roles.items()}
            if halves
            else None,
            "ended": _ended(rows[s.key]),
            "per_task": {
                t: {"summary": summarise({t: reps}, [t]), "replays": _columns(reps)}
                for t, reps in rows[s.key].items()
            },
            "per_task_subpools": {t: summarise(halves[s.key], [t]) for t in halves[s.key]}
            if halves
            else None,
        }
        for s in every
    ]
    out = {
        "tasks": {p.task: _task_info(p) for p in pools},
        "replays_per_task": permutations,
        "subpools_per_task": subpools,
        "settings": table,
        "chosen": {**chosen, "chosen_on": choose_on, "in_sample": in_sample},
        "verdict": verdict(rows, chosen, judge_on),
        "verdict_all_tasks": verdict(rows, chosen, roles["all"]),
    }
    if halves:
        out["verdict_subpools"] = verdict(halves, chosen, roles["all"])
    return out


def _columns(replays: list[dict]) -> dict[str, list]:
    """Replays as columns (the JSON's compact form): {field: [value per replay]}."""
    return {key: [r[key] for r in replays] for key in replays[0]} if replays else {}


def _ended(per_task: dict[str, list[dict]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for replays in per_task.values():
        for r in replays:
            out[r["ended"]] = out.get(r["ended"], 0) + 1
    return out


def _task_info(pool: Pool) -> dict:
    means = pool.truth.mean(1)
    return {
        "role": pool.role,
        "candidates": list(pool.names),
        "skipped_candidates": pool.skipped,
        "partial_pool": bool(pool.skipped),
        "equal_flops": pool.equal_flops,
        "truth_seeds": [s for s in TRUTH_SEEDS if s != REPLAY_SEED],
        "truth_mean": means.tolist(),
        "truth_best": pool.names[int(np.argmax(means))],
        "within_noise_of_best": int(pool.quality[0].sum()),
    }


# ------------------------------------------------------------------------------------------------ report
def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _cells(s: dict | None) -> str:
    if not s:
        return "- | - | - | -"
    return f"{_pct(s['fraction'])} | {_pct(s['within_noise'])} | {s['regret_pt']:.2f} | {s['replays']}"


def _table(doc: dict, role: str, keys: set[str] | None = None) -> list[str]:
    """Markdown rows of the settings (``keys``: only those) on the tasks of ``role``: whole pools, then
    halves."""
    halves = bool(doc.get("subpools_per_task"))
    head = "| method | setting | compute, % of equal | pick within noise | mean regret (pt) | replays |"
    rule = "|---|---|---:|---:|---:|---:|"
    if halves:
        head += " halves: compute | within noise | regret (pt) | replays |"
        rule += "---:|---:|---:|---:|"
    rows = [e for e in doc["settings"] if e["summary"][role] and (keys is None or e["key"] in keys)]
    return [head, rule] + [
        f"| {e['family']} | {e['setting']} | {_cells(e['summary'][role])} |"
        + (f" {_cells(e['subpools'][role])} |" if halves else "")
        for e in rows
    ]


def verdict_line(v: dict, chosen: dict, label: str) -> str:
    """The target's sentence, with the numbers."""
    n, e, o = v["ncap"], v["equal"], v["optuna"]
    return (
        f"**Target {'met' if v['met'] else 'missed'}** on {label} ({', '.join(v['tasks'])}): ncap halving "
        f"`{chosen['ncap']}` picks within noise in {_pct(n['within_noise'])} of replays (equal allocation "
        f"{_pct(e['within_noise'])}) at {_pct(n['fraction'])} of equal allocation's compute (target <= "
        f"{100 * TARGET_FRACTION:.0f} %); Optuna's best pruner `{chosen['optuna']}`: {_pct(o['fraction'])}, "
        f"within noise {_pct(o['within_noise'])}. Checks: "
        + ", ".join(f"{k.replace('_', ' ')}: {'yes' if ok else 'no'}" for k, ok in v["checks"].items())
        + "."
    )


def markdown(doc: dict) -> str:
    """allocation.md: the verdict, the tables (all tasks; chosen settings per role and per task), what was
    skipped."""
    chosen = doc["chosen"]
    how = (
        "chosen in-sample (no development/held-out split among the tasks used)"
        if chosen["in_sample"]
        else f"chosen on the development tasks ({', '.join(chosen['chosen_on'])}), reported on the held-out "
        "ones"
    )
    title = "# Allocation benchmark (issue 23): compute to pick a model within noise of the truth's best\n"
    judged = "all tasks (in-sample)" if chosen["in_sample"] else "the held-out tasks"
    rule = (
        f"Settings {how}; each family's is its cheapest setting whose within-noise rate is at least equal "
        "allocation's (none: its best rate).\n"
    )
    lines = [
        title,
        f"`{doc['command']}`\n",
        verdict_line(doc["verdict"], chosen, judged) + "\n",
        rule,
        verdict_line(doc["verdict_all_tasks"], chosen, "all tasks (development ones in-sample)") + "\n",
    ]
    if "verdict_subpools" in doc:
        lines.append(
            verdict_line(
                doc["verdict_subpools"],
                chosen,
                "random halves of the pools (a robustness check; the settings as chosen above)",
            )
            + "\n"
        )
    lines += ["## Data\n", *_data_lines(doc), "\n## All tasks, every setting\n", *_table(doc, "all")]
    keep = {chosen["ncap"], chosen["optuna"], *(e["key"] for e in doc["settings"] if e["family"] == "equal")}
    for role in ("dev", "held_out"):
        if any(e["summary"][role] for e in doc["settings"]):
            lines += [
                f"\n## {role.replace('_', ' ')} tasks: equal allocation and the chosen settings\n",
                *_table(doc, role, keep),
            ]
    return "\n".join(lines + _per_task_lines(doc, keep) + ["", *_notes(doc)]) + "\n"


def _per_task_lines(doc: dict, keep: set[str]) -> list[str]:
    lines = [
        "\n## Per task (whole pools): equal allocation and the chosen settings\n",
        "| task | method | compute, % of equal | pick within noise | mean regret (pt) | picks |",
        "|---|---|---:|---:|---:|---|",
    ]
    for task in doc["tasks"]:
        for e in (x for x in doc["settings"] if x["key"] in keep):
            summary, reps = e["per_task"][task]["summary"], e["per_task"][task]["replays"]
            picks = sorted({p for p in reps["pick"] if p})
            lines.append(
                f"| {task} | {e['key']} | {_pct(summary['fraction'])} | {_pct(summary['within_noise'])} | "
                f"{summary['regret_pt']:.2f} | {', '.join(picks)} |"
            )
    return lines


def _data_lines(doc: dict) -> list[str]:
    seeds = doc["tasks"][next(iter(doc["tasks"]))]["truth_seeds"]
    text = (
        f"Selection benchmark v3's records; replays = each task's seed-{REPLAY_SEED} runs x "
        f"{doc['replays_per_task']} candidate orders (the design's, then seeded permutations); truth = mean "
        f"final accuracy of seeds {seeds} (leave-one-out: the replayed seed never judges). Within noise and "
        "regret as in `bench/decisive.py` (Welch-decisive pairs). Compute = FLOPs (`bench/run_flops.py`) of "
        "every candidate as far as it trained, activation cache included, as a fraction of equal "
        "allocation's "
        "10 epochs. `equal prefix` = the first E epochs of the 10-epoch schedule (its learning rate has not "
        f"decayed), not a schedule of E epochs. *Halves*: besides, {doc.get('subpools_per_task', 0)} seeded "
        "random halves of each pool (ceil(n/2) candidates, random order), each a selection problem with its "
        "own truth's best: finer pick-quality rates than the few tasks give; compute as a fraction of equal "
        "allocation on the same half.\n"
    )
    out = [
        text,
        "| task | role | candidates | truth's best | within noise of it | equal allocation, FLOPs |",
        "|---|---|---:|---|---:|---:|",
    ]
    for task, t in doc["tasks"].items():
        size = f"{len(t['candidates'])}" + (" (partial pool)" if t["partial_pool"] else "")
        out.append(
            f"| {task} | {t['role']} | {size} | {t['truth_best']} | {t['within_noise_of_best']} | "
            f"{t['equal_flops']:.3g} |"
        )
    return out


def _notes(doc: dict) -> list[str]:
    out = ["## Skipped\n"]
    out += [f"* task {task}: {why}" for task, why in doc["skipped_tasks"].items()]
    out += [
        f"* {task}: candidates without every truth seed yet, left out of its pool: "
        f"{', '.join(t['skipped_candidates'])}"
        for task, t in doc["tasks"].items()
        if t["skipped_candidates"]
    ]
    if len(out) == 1:
        out.append("* nothing")
    return out + [
        "\n## Notes\n",
        *_halving_notes(doc),
        f"\nMachine: {doc['machine']}; {doc['seconds']:.0f} s.",
    ]


def _halving_notes(doc: dict) -> list[str]:
    """What the replays say about ncap's halving itself: how its runs ended, and where the order mattered."""
    halving = [e for e in doc["settings"] if e["family"] == "ncap halving"]
    chosen = next(e for e in halving if e["key"] == doc["chosen"]["ncap"])
    never = [e for e in halving if e["params"]["stop_p_best"] >= 1]
    early = sum(e["ended"].get("p_best", 0) for e in never)
    total = sum(sum(e["ended"].values()) for e in never)
    varied = sorted(
        {t for e in halving for t, v in e["per_task"].items() if len(set(v["replays"]["pick"])) > 1}
    )
    return [
        f"* How the chosen ncap setting's replays ended (the last rung's reason): {chosen['ended']}.",
        (
            f'* `stop_p_best=1.0` (the Recipe\'s "1 = never early") still stopped on P(best) in {early} of '
            f"{total} replays: the Monte Carlo P(best) reaches exactly 1 when one candidate wins every draw."
        ),
        (
            "* ncap's halving is synchronous, yet its pick changed with the candidate order on "
            f"{', '.join(varied) or 'no task'}: `Allocation.decide` breaks tied scores (many candidates at "
            "the majority-class accuracy early in the warm-up) by the order it is given, so who survives a "
            "rung can depend on it."
        ),
    ]


def plot(doc: dict, path: Path) -> None:
    """allocation.png: compute fraction against within-noise rate over all tasks, one marker per setting;
    whole pools on the left, random halves (if run) on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("summary", "whole pools")] + (
        [("subpools", "random halves")] if doc.get("subpools_per_task") else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (field_, title) in zip(axes[0], panels):
        _scatter(ax, doc, field_)
        ax.set_title(f"{title} ({', '.join(doc['tasks'])})", fontsize=9)
    fig.suptitle("Allocation on benchmark v3's recorded runs (issue 23)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_STYLE = {
    "equal": ("k", "*"),
    "equal prefix": ("0.5", "o"),  # joined by a line: prefixes of the 10-epoch schedule
    "ncap halving val_acc": ("C0", "s"),
    "ncap halving beta_eff": ("C2", "D"),
    "optuna SHA": ("C1", "^"),
    "optuna hyperband": ("C3", "v"),
}


def _scatter(ax, doc: dict, field_: str) -> None:
    seen = set()
    for e in doc["settings"]:
        name = e["family"] + (f" {e['params']['rule']}" if e["family"] == "ncap halving" else "")
        color, marker = _STYLE.get(name, ("C4", "x"))
        s = e[field_]["all"]
        x, y = 100 * s["fraction"], 100 * s["within_noise"]
        ax.scatter(x, y, c=color, marker=marker, s=40, alpha=0.8, label=None if name in seen else name)
        seen.add(name)
        if e["key"] in (doc["chosen"]["ncap"], doc["chosen"]["optuna"]):
            ax.annotate(e["setting"], (x, y), fontsize=6, xytext=(4, -10), textcoords="offset points")
    curve = sorted(
        (100 * e[field_]["all"]["fraction"], 100 * e[field_]["all"]["within_noise"])
        for e in doc["settings"]
        if e["family"].startswith("equal")
    )
    ax.plot(*zip(*curve), color="0.5", lw=1, zorder=0)  # equal allocation's prefixes of the 10-epoch schedule
    ax.axvline(100 * TARGET_FRACTION, color="0.7", ls="--", lw=1)
    ax.set(
        xlabel="compute, % of equal allocation (FLOPs)",
        ylabel="pick within noise of the truth's best, %",
        xlim=(0, 105),
        ylim=(-5, 105),
    )
    ax.legend(fontsize=7, loc="lower right")


# ------------------------------------------------------------------------------------------------ command
def benchmark(
    tasks: Sequence[str],
    permutations: int,
    subpools: int,
    rules: Sequence[str],
    min_candidates: int,
    progress: Callable[[str], None] = print,
) -> dict:
    """Load the ready pools of ``tasks``, replay every setting, and return the report's dict."""
    import os
    import platform
    import time

    start, pools, skipped = time.perf_counter(), [], {}
    for task in tasks:
        pool, left_out = load_pool(task, min_candidates)
        if pool is None:
            skipped[task] = (
                f"{len(CANDIDATES) - len(left_out)} of {len(CANDIDATES)} candidates have every truth "
                f"seed recorded (fewer than {min_candidates})"
            )
        else:
            pools.append(pool)
    if not pools:
        raise SystemExit(f"no task has {min_candidates} candidates with every truth seed recorded: {skipped}")
    progress(f"pools: {', '.join(f'{p.task} ({len(p.names)})' for p in pools)}")
    doc = evaluate(pools, settings(rules), permutations, subpools, progress)
    return {
        **doc,
        "skipped_tasks": skipped,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - start,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ncap.bench.allocation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help="comma-separated v3 tasks; those without enough recorded candidates are skipped and listed "
        "[default: all of v3's]",
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for allocation.{json,md,png} [%(default)s]"
    )
    p.add_argument(
        "--permutations", type=int, default=20, help="candidate orders replayed per task [%(default)s]"
    )
    p.add_argument(
        "--subpools",
        type=int,
        default=20,
        help="random halves of each pool replayed besides (a robustness check; 0: none) [%(default)s]",
    )
    p.add_argument(
        "--rules",
        default="val_acc,beta_eff",
        help=f"ranking rules of ncap's halving; the default setting is chosen among {DEFAULT_RULE}'s "
        "[%(default)s]",
    )
    p.add_argument(
        "--min-candidates",
        type=int,
        default=MIN_CANDIDATES,
        help="a task is used when this many candidates have every truth seed [%(default)s]",
    )
    args = p.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if unknown := [t for t in tasks if t not in TASKS]:
        p.error(f"unknown v3 tasks: {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if DEFAULT_RULE not in rules:
        p.error(f"--rules must include the product's rule {DEFAULT_RULE}")
    return write(benchmark(tasks, args.permutations, args.subpools, rules, args.min_candidates), args, argv)


def write(doc: dict, args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Write allocation.{json,md,png} to ``args.out`` and print the markdown."""
    from ncap.jsonsafe import to_jsonable, write_json

    given = list(sys.argv[1:] if argv is None else argv)
    doc["command"] = " ".join(["python -m ncap.bench.allocation", *given])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "allocation.json", to_jsonable(doc), allow_nan=False, indent=1)
    md = markdown(doc)
    (args.out / "allocation.md").write_text(md)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot(doc, args.out / "allocation.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
