"""Selection benchmark v3, the verdict: every ranker scored on decisive pairs from the committed run records.

    python -m ncap.bench.evaluate_v3 [--partial]

Reads ``bench/results/selection-v3/runs/`` (written by ``python -m ncap.bench.selection_v3 run``) and writes
``results.json``, ``results.md`` and ``dpa.png`` next to it. ``--partial`` reports the tasks whose runs are all
recorded and says which are missing; without it, a missing run is an error.

Signals (what a ranker reads, per candidate):

* ``short``: ``ncap rank`` itself (its defaults, the candidate's regime);
* ``short-dense``: the same run observed 8 times per epoch (new idea (c));
* ``short@E``: ``ncap rank``'s run as observed up to epoch E of its 4 (:data:`SHORT_EPOCHS`), a cheaper read
  of the same run;
* ``prefix@E``: the first E epochs of the seed-0 truth run, i.e. β_eff read on the prefix of the full schedule
  (new idea (b)), for E in :data:`PREFIX_EPOCHS`;
* ``training-free``: the static records (LogME, H-score, LEEP, NCE, source accuracy), charged one forward pass
  of the whole backbone over the training images. Only the training-free rankers are scored on it, and only
  on it.

Budgets (:data:`BUDGETS`, "≤ 10 %" and "≤ 25 %" of the truth's compute): per ranker, among the signals that cost
at most the budget on every kept task, the one with its best pooled DPA on the development tasks; the held-out
values are read there, so the choice sees no held-out result. The goal (issue 21) is checked on the held-out
real-image tasks for the default ranker at ≤ 25 %, against every other ranker at the same budget with a paired
bootstrap of the DPA difference.

Every ranker of v2 (``bench.rankers``: Algorithm 1 in its 27 settings, val_acc, tse_ema, curve extrapolation,
successive halving, the combined predictor, and the training-free LogME, H-score, LEEP, NCE and source accuracy
from each task's ``static`` records) is scored on every signal. Compute: a signal's CPU seconds (this process's, every pass: caching, training, validation, β_eff),
summed over the candidates, as a fraction of the truth's (one seed of the converged fine-tune of every
candidate, caching included). A run that reused an activation cache is charged the CPU its building took.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys

import numpy as np

from ncap.bench import decisive, rankers
from ncap.bench.design_v3 import (
    CALIBRATION,
    CALIBRATION_TASK,
    CANDIDATES,
    TASKS,
    TRUTH_EPOCHS,
    TRUTH_SEEDS,
    describe,
)
from ncap.bench.rankers import Signal, product_settings, truncate
from ncap.bench.run_flops import run_flops, static_flops
from ncap.bench.selection_v3 import RESULTS, STATIC, load_record
from ncap.bench.tasks import TASKS_V3

PREFIX_EPOCHS = (0.5, 1.0, 2.0, 2.5)
SHORT_EPOCHS = (1.0, 2.0)
TRAINING_FREE = "training-free"
MIN_DECISIVE = 10
BUDGETS = (0.10, 0.25)
GOAL = {"budget": 0.25, "dpa": 0.9, "regret_pt": 0.5}
N_BOOT = 500


def run_cost(run: dict, upto: int | None = None) -> float:
    """FLOPs of a run up to observation ``upto`` (:func:`ncap.bench.run_flops.run_flops`: every pass, its
    activation cache included whoever built it). The compute fractions are ratios of these."""
    task = TASKS_V3[run["task"]]
    return run_flops(run, task.n_train, task.n_val, upto)


def run_cpu(run: dict, upto: int | None = None) -> float:
    """CPU seconds of a run (up to observation ``upto``), charged for its activation cache whoever built it:
    reported beside the FLOPs fraction, but other load on the machine inflates it (bench/run_flops.py)."""
    cpu = run["cpu_time_s"] if upto is None else run["obs_cpu_s"][upto]
    return float(cpu + (run.get("cache_build_cpu_s", 0.0) if run.get("cache_reused") else 0.0))


def load_task(task: str) -> dict | None:
    """{"truth": (n_cand, n_seeds), "short": [...], "short-dense": [...], "seed0": [...]}, or None if a run is missing."""
    out: dict = {"short": [], "short-dense": [], "seed0": [], "truth": [], "static": []}
    for cand in CANDIDATES:
        out["static"].append(load_record(task, cand, STATIC) or {})  # scored where recorded
        docs = {label: load_record(task, cand, label) for label in ("short", "short-dense", *(f"seed{s}" for s in TRUTH_SEEDS))}
        if any(d is None for d in docs.values()):
            return None
        for label in ("short", "short-dense", "seed0"):
            out[label].append(docs[label])
        out["truth"].append([rankers.final_accuracy(docs[f"seed{s}"]) for s in TRUTH_SEEDS])
    out["truth"] = np.array(out["truth"], float)
    return out


def signals(data: dict, cost=None) -> dict[str, tuple[list[dict], float]]:
    """{signal name: (trajectories, compute fraction of the truth)}; ``cost`` is :func:`run_cost` (FLOPs) or
    :func:`run_cpu`."""
    cost = cost or run_cost
    out = {name: (data[name], _fraction(data[name], data["seed0"], cost)) for name in ("short", "short-dense")}
    for family, source, epochs in (("short", "short", SHORT_EPOCHS), ("prefix", "seed0", PREFIX_EPOCHS)):
        for e in epochs:
            runs = [truncate(r, e) for r in data[source]]
            if not any(cut["epoch"] for cut in runs):  # observed later than e (observations fall on steps)
                continue
            upto = [max(len(cut["epoch"]) - 1, 0) for cut in runs]
            out[f"{family}@{e:g}"] = (runs, _fraction(data[source], data["seed0"], cost, upto))
    static = sum(static_flops(r, TASKS_V3[r["task"]].n_train) for r in data["short"]) / sum(run_cost(r) for r in data["seed0"])
    out[TRAINING_FREE] = (data["short"], static if cost is run_cost else float("nan"))
    return out


def cpu_fractions(data: dict) -> dict[str, float]:
    """The CPU-time counterpart of :func:`signals`' FLOPs fractions, for the report (NaN for the training-free
    scores, whose records carry no CPU time)."""
    return {name: fraction for name, (_, fraction) in signals(data, run_cpu).items()}


def _fraction(runs: list[dict], truth: list[dict], cost, upto: list[int] | None = None) -> float:
    """cost(runs) / cost(one seed of the truth), each run up to its observation in ``upto``."""
    spent = sum(cost(r, None if upto is None else u) for r, u in zip(runs, upto or [None] * len(runs)))
    return spent / sum(cost(r) for r in truth)


def score_task(data: dict) -> dict:
    """Per signal: its compute fraction and every ranker's decisive-pair metrics on this task."""
    seeds = data["truth"]
    out = {}
    cpu = cpu_fractions(data)
    for name, (runs, fraction) in signals(data).items():
        budget = float(np.mean([r["epoch"][-1] for r in runs if r["epoch"]])) if runs else 0.0
        sig = Signal(runs, data["seed0"], data["static"], budget, float(TRUTH_EPOCHS))
        if name == TRAINING_FREE:
            scores = {key: rankers.static_scores(sig, key) for key in rankers.STATIC}
        else:
            scores = {r: v for r, v in rankers.score_all(sig)[0].items() if r not in rankers.STATIC}
        metrics = {}
        for ranker, s in scores.items():
            if np.isnan(s).all():
                continue
            value, n_pairs = decisive.dpa(s, seeds)
            points, sds = decisive.top1_regret(s, seeds)
            metrics[ranker] = {"dpa": value, "dpa_ci": decisive.dpa_interval(s, seeds, n_boot=N_BOOT), "pairs": n_pairs,
                               "regret_pt": points, "regret_sd": sds, "p_best": decisive.p_pick_best(s, seeds, n_boot=N_BOOT),
                               "within_noise": decisive.pick_within_noise(s, seeds),
                               "tau_b": decisive.kendall_tau_b_banded(s, seeds), "scores": s.tolist()}
        out[name] = {"compute_fraction": fraction, "cpu_fraction": cpu[name], "rankers": metrics}
    return out


def task_summary(task: str, data: dict) -> dict:
    seeds = data["truth"]
    pairs = decisive.decisive_pairs(seeds)
    imagenet = {i for i, c in enumerate(CANDIDATES) if c.entry.endswith("in1k")}
    return {"role": "held out" if TASKS_V3[task].held_out else "dev", "real_images": TASKS_V3[task].real_images,
            "decisive_pairs": len(pairs), "decisive_pairs_imagenet": sum(i in imagenet and j in imagenet for i, j in pairs),
            "reliability": decisive.reliability(seeds), "seed_sd_pt": 100 * float(np.sqrt(np.var(seeds, axis=1, ddof=1).mean())),
            "image_size": {c.name: r["input_size"] for c, r in zip(CANDIDATES, data["short"])},
            "truth_seeds": seeds.tolist(), "truth_mean": seeds.mean(1).tolist(),
            "kept": len(pairs) >= MIN_DECISIVE}


@functools.cache
def _draws(sizes: tuple[int, ...], seed: int = 0, n_boot: int = N_BOOT) -> tuple[tuple[tuple[int, np.ndarray], ...], ...]:
    """``n_boot`` bootstrap draws over tasks, then candidates within each drawn task (``sizes``: the tasks'
    candidate counts): per draw, (task index, which candidates were drawn) per drawn task. The same sizes and
    seed give the same draws, so two rankers' DPAs are paired."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        draw = []
        for k in rng.integers(0, len(sizes), len(sizes)):
            drawn = np.zeros(sizes[k], bool)
            drawn[rng.integers(0, sizes[k], sizes[k])] = True
            draw.append((int(k), drawn))
        out.append(tuple(draw))
    return tuple(out)


def _boot_dpa(credit: list[dict], sizes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Pooled DPA in every draw (NaN where a draw holds no decisive pair): a pair counts when both of its
    candidates were drawn (duplicates dropped)."""
    pairs = [(np.array([p[0] for p in cr], int), np.array([p[1] for p in cr], int), np.array(list(cr.values()), float))
             for cr in credit]
    out = []
    for draw in _draws(sizes, seed, N_BOOT):
        total = count = 0.0
        for k, drawn in draw:
            i, j, c = pairs[k]
            if len(c):
                both = drawn[i] & drawn[j]
                total, count = total + c[both].sum(), count + both.sum()
        out.append(total / count if count else np.nan)
    return np.array(out)


def _rows(per_task: dict, tasks: list[str], signal: str, ranker: str) -> list[dict] | None:
    rows = [per_task[t]["signals"].get(signal, {}).get("rankers", {}).get(ranker) for t in tasks]
    return None if not tasks or any(r is None for r in rows) else rows


def _sizes(per_task: dict, tasks: list[str]) -> tuple[int, ...]:
    return tuple(len(per_task[t]["summary"]["truth_seeds"]) for t in tasks)


def _task_credits(per_task: dict, tasks: list[str], rows: list[dict]) -> list[dict]:
    truths = [np.array(per_task[t]["summary"]["truth_seeds"]) for t in tasks]
    return [_credits(np.array(r["scores"], float), t) for r, t in zip(rows, truths)]


def pooled(per_task: dict, tasks: list[str], signal: str, ranker: str, seed: int = 0) -> dict | None:
    """DPA over the decisive pairs of ``tasks`` pooled, with a bootstrap over tasks and candidates; mean regret,
    P(best), pick within noise and compute fraction over the tasks."""
    rows = _rows(per_task, tasks, signal, ranker)
    if rows is None:
        return None
    credit = _task_credits(per_task, tasks, rows)
    boot = _boot_dpa(credit, _sizes(per_task, tasks), seed)
    boot = boot[np.isfinite(boot)]
    every = [c for cr in credit for c in cr.values()]
    return {"dpa": float(np.mean(every)) if every else float("nan"), "pairs": len(every),
            "dpa_ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])] if len(boot) else [float("nan")] * 2,
            "regret_pt": float(np.mean([r["regret_pt"] for r in rows])),
            "regret_sd": float(np.mean([r["regret_sd"] for r in rows])),
            "p_best": float(np.mean([r["p_best"] for r in rows])),
            "within_noise": float(np.mean([r["within_noise"] for r in rows])),
            "compute_fraction": float(np.mean([per_task[t]["signals"][signal]["compute_fraction"] for t in tasks]))}


def dpa_difference(per_task: dict, tasks: list[str], a: tuple[str, str], b: tuple[str, str], seed: int = 0) -> dict | None:
    """Pooled DPA of ``a`` minus that of ``b`` (each a (signal, ranker)) on ``tasks``, with a paired bootstrap
    interval (the same draws of tasks and candidates for both)."""
    rows_a, rows_b = _rows(per_task, tasks, *a), _rows(per_task, tasks, *b)
    if rows_a is None or rows_b is None:
        return None
    ca, cb = _task_credits(per_task, tasks, rows_a), _task_credits(per_task, tasks, rows_b)
    sizes = _sizes(per_task, tasks)
    diff = _boot_dpa(ca, sizes, seed) - _boot_dpa(cb, sizes, seed)
    diff = diff[np.isfinite(diff)]
    point = np.mean([c for cr in ca for c in cr.values()]) - np.mean([c for cr in cb for c in cr.values()])
    return {"diff": float(point), "ci": [float(v) for v in np.percentile(diff, [2.5, 97.5])]}


def _credits(scores: np.ndarray, seeds: np.ndarray) -> dict[tuple[int, int], float]:
    means = seeds.mean(1)
    return {(i, j): decisive.dpa(scores[[i, j]], seeds[[i, j]], pairs=[(0, 1)])[0]
            for i, j in _decisive_pairs(tuple(map(tuple, seeds.tolist()))) if np.isfinite(means[[i, j]]).all()}


@functools.cache
def _decisive_pairs(seeds: tuple[tuple[float, ...], ...]) -> list[tuple[int, int]]:
    return decisive.decisive_pairs(np.array(seeds, float))


def budget_view(per_task: dict, dev: list[str], held: list[str], budget: float) -> dict:
    """{ranker: {"signal", "dev", "held_out"}} at ``budget``: the signal, among those costing at most
    ``budget`` of the truth on every task, with the ranker's best pooled dev DPA (module docstring)."""
    kept = dev + held
    affordable = [sig for sig in per_task[kept[0]]["signals"]
                  if all(per_task[t]["signals"][sig]["compute_fraction"] <= budget for t in kept)]
    names = sorted({r for t in dev for sig in affordable for r in per_task[t]["signals"][sig]["rankers"]})
    out = {}
    for ranker in names:
        options = [(p["dpa"], -p["compute_fraction"], sig) for sig in affordable
                   if (p := pooled(per_task, dev, sig, ranker)) is not None and np.isfinite(p["dpa"])]
        if options:
            sig = max(options)[2]
            out[ranker] = {"signal": sig, "dev": pooled(per_task, dev, sig, ranker),
                           "held_out": pooled(per_task, held, sig, ranker) if held else None}
    return out


def goal(per_task: dict, view: dict, held_real: list[str], default: str) -> dict:
    """Issue 21's goal on the held-out real-image tasks: the default at ≤ 25 % has DPA ≥ 0.9, regret ≤ 0.5 pt
    and a paired DPA difference above 0 against every other ranker at the same budget."""
    if not held_real or default not in view:
        return {**GOAL, "tasks": held_real, "ranker": default, "met": False,
                "reason": "no held-out real-image task, or no signal of the default within the budget"}
    sig = view[default]["signal"]
    mine = pooled(per_task, held_real, sig, default)
    ahead = {peer: dpa_difference(per_task, held_real, (sig, default), (v["signal"], peer))
             for peer, v in view.items() if peer != default}
    ahead = {k: v for k, v in ahead.items() if v is not None}
    checks = {"dpa": mine["dpa"] >= GOAL["dpa"], "regret": mine["regret_pt"] <= GOAL["regret_pt"],
              "ahead_of_every_peer": all(v["ci"][0] > 0 for v in ahead.values())}
    return {**GOAL, "tasks": held_real, "ranker": default, "signal": sig, "held_out": mine, "checks": checks,
            "differences": ahead, "met": all(checks.values())}


def calibration(per_task: dict) -> dict | None:
    """Agreement of one seed of ``trainable=all`` with the ``top`` truth of the ImageNet models (ρ, DPA)."""
    docs = [load_record(CALIBRATION_TASK, c, "calibration") for c in CALIBRATION]
    if any(d is None for d in docs) or CALIBRATION_TASK not in per_task:
        return None
    from scipy import stats

    names = [f"{c.entry}@top" for c in CALIBRATION]
    idx = [[c.name for c in CANDIDATES].index(n) for n in names]
    seeds = np.array(per_task[CALIBRATION_TASK]["summary"]["truth_seeds"])[idx]
    acc = np.array([rankers.final_accuracy(d) for d in docs])
    value, n = decisive.dpa(acc, seeds)
    return {"task": CALIBRATION_TASK, "candidates": names, "all_accuracy": acc.tolist(),
            "top_truth": seeds.mean(1).tolist(), "rho": float(stats.spearmanr(acc, seeds.mean(1)).statistic),
            "dpa": value, "pairs": n, "image_size": docs[0]["input_size"]}


def choose_default(per_task: dict, dev: list[str]) -> tuple[str, dict]:
    """The product-computable ranker (``ncap rank`` can rank by it from its own run) with the best pooled dev DPA
    on the ``short`` signal; ties go to the cheaper, then the simpler name."""
    best = None
    for ranker in per_task[dev[0]]["signals"]["short"]["rankers"]:
        if product_settings(ranker) is None:
            continue
        p = pooled(per_task, dev, "short", ranker)
        if p is not None and (best is None or p["dpa"] > best[1]["dpa"]):
            best = (ranker, p)
    return best


def evaluate(partial: bool) -> dict:
    per_task, missing = {}, []
    for task in TASKS:
        data = load_task(task)
        if data is None:
            missing.append(task)
            continue
        per_task[task] = {"summary": task_summary(task, data), "signals": score_task(data)}
    if missing and not partial:
        raise SystemExit(f"runs missing for {', '.join(missing)}: run `python -m ncap.bench.selection_v3 run` or pass --partial")
    kept = [t for t in per_task if per_task[t]["summary"]["kept"]]
    dev = [t for t in kept if not TASKS_V3[t].held_out]
    held = [t for t in kept if TASKS_V3[t].held_out]
    out = {"design": describe(), "tasks": {t: v["summary"] for t, v in per_task.items()}, "missing_tasks": missing,
           "per_task": {t: v["signals"] for t, v in per_task.items()}, "candidates": [c.name for c in CANDIDATES]}
    if dev:
        default, _ = choose_default(per_task, dev)
        out["default_ranker"] = default
        rankers_seen = sorted({r for t in kept for s in per_task[t]["signals"].values() for r in s["rankers"]})
        out["pooled"] = {role: {sig: {r: pooled(per_task, ts, sig, r) for r in rankers_seen}
                                for sig in per_task[kept[0]]["signals"]} for role, ts in (("dev", dev), ("held_out", held))}
        out["budgets"] = {f"{b:g}": budget_view(per_task, dev, held, b) for b in BUDGETS}
        held_real = [t for t in held if TASKS_V3[t].real_images]
        out["goal"] = goal(per_task, out["budgets"][f"{GOAL['budget']:g}"], held_real, default)
    out["calibration"] = calibration(per_task)
    out.update(command="python -m ncap.bench.evaluate_v3" + (" --partial" if partial else ""),
               machine=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncap.bench.evaluate_v3", description=__doc__.splitlines()[0])
    p.add_argument("--partial", action="store_true", help="report the tasks whose runs are all recorded")
    args = p.parse_args(argv)
    results = evaluate(args.partial)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=float))
    from ncap.bench.report_v3 import markdown, plot

    md = markdown(results)
    (RESULTS / "results.md").write_text(md)
    plot(results, RESULTS / "dpa.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
