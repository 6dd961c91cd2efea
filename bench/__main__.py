"""Selection benchmark v2: does ncap pick the model a full fine-tune would pick, and better than its peers?

    python -m ncap.bench              # full design (bench.design.full_design), every run cached: resumable
    python -m ncap.bench --partial    # report from the cached runs only (tasks with missing runs left out)
    python -m ncap.bench --quick      # <= 5 min on 2 cores: a smoke test of the whole pipeline
    ncap bench [--quick]              # the same

Per task and candidate: the truth (final validation accuracy of a full fine-tune with the real recipe,
warm-up + cosine to 0, averaged over the truth seeds), ncap's own short run with the ``ncap rank``
defaults, and the training-free scores. Every ranker (bench.rankers) is scored on the prefix of the
seed-0 truth run at several budgets and on the short run. Writes bench/results/selection[-quick]/:
results.json (every number), results.md (tables), rho_vs_budget.png, pred_vs_true.png; and the combined
predictor fitted on the development tasks (bench/results/combined_predictor.json, full design only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ncap.bench import rankers, report
from ncap.bench.design import Design, full_design, quick_design
from ncap.bench.evaluation import spearman
from ncap.bench.options import add_arguments, command, results_name
from ncap.bench.runs import cached_run, cached_static_scores, is_cached
from ncap.bench.statistics import metric_values, paired_counts, summarise
from ncap.bench.tasks import get_task

RESULTS = Path(__file__).parent / "results"
ARTEFACT = Path(__file__).resolve().parent / "results" / "combined_predictor.json"  # read by no product code
CEILING_MIN = 0.9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.bench", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run (or, with ``--partial``, only report) the benchmark for parsed :func:`bench.options.add_arguments`."""
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    design = quick_design() if args.quick else full_design()
    if args.tasks:
        design = design.restricted(args.tasks)
    if args.task_resolution:
        design = design.with_task_resolution(dict(args.task_resolution))
    specs = design.resolve_candidates(progress=not args.quiet)
    data = collect(design, specs, args)
    if not data:
        print("no task has all its runs cached yet; nothing to report", file=sys.stderr)
        return 1
    results = evaluate(design, data, args)
    results.update(command=command(args), machine=f"{platform.machine()} CPU, {os.cpu_count()} cores",
                   bench_wall_time_s=time.perf_counter() - t_start)
    out_dir = args.out or RESULTS / results_name(args.quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=float))
    md = report.markdown(results)
    (out_dir / "results.md").write_text(md)
    report.plots(results, out_dir)
    all_dev = set(design.dev_tasks) <= set(results["tasks"])
    if results.get("artefact") and all_dev and not (args.quick or args.no_artefact or args.tasks):
        ARTEFACT.write_text(json.dumps(results["artefact"], indent=1))
    print(md)
    return 0


def collect(design: Design, specs: list, args) -> dict[str, dict]:
    """{task: {"truth": [[run per candidate] per seed], "short": [...], "static": [...]}} for every task
    whose runs all exist (``--partial``) or were just run; each finished run is cached at once."""
    data, log = {}, (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    n_jobs = len(design.tasks) * len(specs) * (len(design.truth_recipes) + 1)
    done = 0
    for task_name in design.tasks:
        task, at = get_task(task_name), design.for_task(task_name)  # the design at the task's resolution
        jobs = [(r, s) for s in specs for r in (*at.truth_recipes, at.short_recipe)]
        if args.partial and not all(is_cached(r, task, s) for r, s in jobs):
            log(f"{task_name}: runs missing, left out of this partial report")
            continue
        entry = {"truth": [[] for _ in at.truth_recipes], "short": [], "static": []}
        for spec in specs:
            entry["static"].append({**cached_static_scores(spec, task, at.static_recipe, rebuild=args.rebuild),
                                    "source_accuracy": design.source_accuracy(spec.name)})
            for i, recipe in enumerate((*at.truth_recipes, at.short_recipe)):
                t0 = time.perf_counter()
                run = cached_run(spec, task, recipe, rebuild=args.rebuild, progress=False)
                (entry["short"] if i == len(at.truth_recipes) else entry["truth"][i]).append(run)
                done += 1
                log(f"[{done}/{n_jobs}] {task_name:22s} {spec.name:26s} {design.run_label(i):8s} "
                    f"acc {100 * rankers.final_accuracy(run):5.1f}%  ({time.perf_counter() - t0:.0f} s)")
        data[task_name] = entry
    return data


def truth_table(design: Design, data: dict) -> dict:
    """Per task: truth per seed, mean truth, noise ceiling (Spearman between seeds: every pair, mean, min),
    spread of the mean truths, and whether the task is kept (mean ceiling >= CEILING_MIN)."""
    out = {}
    for task, entry in data.items():
        per_seed = np.array([[rankers.final_accuracy(r) for r in runs] for runs in entry["truth"]])
        mean = np.nanmean(per_seed, axis=0)
        pairs = [spearman(per_seed[a], per_seed[b]) for a in range(len(per_seed)) for b in range(a + 1, len(per_seed))
                 if np.isfinite(per_seed[[a, b]]).all()]
        ceiling = float(np.mean(pairs)) if pairs else float("nan")
        kept = bool(np.isfinite(ceiling) and ceiling >= CEILING_MIN) or not design.drop_below_ceiling
        out[task] = {"per_seed": per_seed.tolist(), "mean": mean.tolist(), "ceiling_pairs": pairs,
                     "ceiling": ceiling, "ceiling_min": float(np.min(pairs)) if pairs else float("nan"),
                     # Spearman-Brown: the expected agreement of two independent means over k seeds (the truth is one)
                     "ceiling_of_seed_mean": float(len(per_seed) * ceiling / (1 + (len(per_seed) - 1) * ceiling)),
                     "spread_points": float(100 * (np.nanmax(mean) - np.nanmin(mean))),
                     "std_points": float(100 * np.nanstd(mean)), "seed_std_points": float(100 * np.nanmean(np.nanstd(per_seed, 0))),
                     "kept": kept, "reason": None if kept else f"noise ceiling {ceiling:.2f} < {CEILING_MIN}",
                     "below_ceiling_min": bool(not np.isfinite(ceiling) or ceiling < CEILING_MIN)}
    return out


def signals_of(design: Design, entry: dict, truth: list[float]) -> dict[str, rankers.Signal]:
    """The task's signals: ``prefix@f`` (the seed-0 truth run cut at f × full epochs) and ``short``; each
    carries the task's mean truth in ``extra`` (the combined predictor is fitted against it)."""
    full = entry["truth"][0]
    common = {"full_runs": full, "static": entry["static"], "full_epochs": design.full_epochs}
    out = {}
    for f in design.budget_fractions:
        k = f * design.full_epochs
        out[f"prefix@{f:g}"] = rankers.Signal([rankers.truncate(r, k) for r in full], budget_epochs=k, **common)
    out["short"] = rankers.Signal(entry["short"], budget_epochs=design.short_recipe.recipe.epochs, **common)
    for sig in out.values():
        sig.extra["truth"] = list(truth)
    return out


def evaluate(design: Design, data: dict, args) -> dict:
    """Every number of the benchmark from the collected runs."""
    truth = truth_table(design, data)
    kept = [t for t in data if truth[t]["kept"]]
    dev = [t for t in kept if not get_task(t).held_out]
    held = [t for t in kept if get_task(t).held_out]
    signals = {t: signals_of(design, data[t], truth[t]["mean"]) for t in data}
    fit_combined_models(signals, dev)
    scores, fallback = {}, {}
    for t in data:
        scores[t], fallback[t] = {}, {}
        for name, sig in signals[t].items():
            scores[t][name], fallback[t][name] = rankers.score_all(sig)
    table = {t: {sig: {r: metric_values(*scored(r, s, truth[t]["mean"])) for r, s in sc.items()}
                 for sig, sc in scores[t].items()} for t in data}
    primary = f"prefix@{design.primary_fraction:g}"
    default, choice = choose_default(table, fallback, dev, "short")  # what `ncap rank` itself runs
    summaries = {group: {sig: {r: summarise([scored(r, scores[t][sig][r], truth[t]["mean"]) for t in tasks],
                                            n_boot=args.n_boot)
                               for r in report.shown_rankers(table, default)}
                         for sig in (primary, "short")}
                 for group, tasks in (("dev", dev), ("held_out", held)) if tasks}
    return {
        "design": design.describe(), "candidates": [s for s in design.candidate_names], "tasks": list(data),
        "dev_tasks": dev, "held_out": held, "dropped": {t: truth[t]["reason"] for t in data if not truth[t]["kept"]},
        "partial": bool(args.partial and len(data) < len(design.tasks)),
        "missing_tasks": [t for t in design.tasks if t not in data],
        "noise_ceiling": {t: truth[t]["ceiling"] for t in data}, "truth": truth,
        "default_ranker": default, "default_choice": choice, "primary_signal": primary,
        "dev_summary": summaries.get("dev", {}).get(primary, {}),
        "held_out_summary": summaries.get("held_out", {}).get(primary, {}),
        "summaries": summaries, "table": table, "fallback": fallback,
        "scores": {t: {sig: {r: np.asarray(s).tolist() for r, s in sc.items()} for sig, sc in scores[t].items()}
                   for t in data},
        "paired": paired_table(table, default, dev, held),
        "compute": compute_table(design, data),
        "artefact": combined_artefact(signals, dev, design) if dev else None,
    }


def scored(ranker: str, scores, truth) -> tuple[np.ndarray, np.ndarray]:
    """(scores, truth) a ranker is evaluated on: every candidate, or for a partial ranker (LEEP, NCE, source
    accuracy) the candidates it scores (all-NaN when fewer than 3)."""
    s, t = np.asarray(scores, float), np.asarray(truth, float)
    if ranker not in rankers.PARTIAL:
        return s, t
    ok = np.isfinite(s)
    return (s[ok], t[ok]) if ok.sum() >= 3 else (np.full(2, np.nan), t[:2])


def fit_combined_models(signals: dict, dev: list[str]) -> None:
    """Put the combined predictor into every signal: fitted on the other development tasks' same signal
    (leave one task out for a development task; every development task for a held-out one)."""
    for t, sigs in signals.items():
        for name, sig in sigs.items():
            train = [(rankers.combined_features(signals[u][name]), np.asarray(signals[u][name].extra["truth"]))
                     for u in dev if u != t]
            sig.extra["combined_model"] = rankers.fit_combined(train) if train else None


def choose_default(table: dict, fallback: dict, dev: list[str], signal: str) -> tuple[str, dict]:
    """``ncap rank``'s default: the ranker with the highest development-task mean ρ on ``signal`` among those
    ``ncap rank`` can compute from its own run (:func:`rankers.product_settings`); a β_eff configuration counts
    only where at most half the candidates fell back to their last accuracy. The choice records every eligible
    ranker's mean, the best ranker overall (which may not be available to ``ncap rank``) and the settings."""
    means = {}
    for r in table[dev[0]][signal] if dev else []:
        if r in rankers.PARTIAL or (rankers.is_configuration(r)
                                    and np.mean([fallback[t][signal].get(r, 1.0) for t in dev]) > 0.5):
            continue
        vals = [table[t][signal][r]["rho"] for t in dev]
        means[r] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    def key(r):
        return np.nan_to_num(means[r], nan=-9), r == rankers.NCAP_DEFAULT

    eligible = [r for r in means if rankers.product_settings(r) is not None]
    if not eligible:
        return rankers.NCAP_DEFAULT, {}
    best = max(eligible, key=key)
    return best, {"signal": signal, "dev_mean_rho": {r: means[r] for r in eligible},
                  "best_overall": max(means, key=key), "best_overall_dev_mean_rho": means[max(means, key=key)],
                  "ncap_rank_settings": rankers.product_settings(best)}


def paired_table(table: dict, default: str, dev: list[str], held: list[str]) -> dict:
    """Win/tie/loss in ρ (tie within 0.02) of the default and of ncap's Algorithm-1 default against every
    peer, over (task, signal) pairs, separately for development and held-out tasks."""
    out = {}
    for me in dict.fromkeys((default, rankers.NCAP_DEFAULT)):
        out[me] = {}
        for group, tasks in (("dev", dev), ("held_out", held)):
            cases = [(t, s) for t in tasks for s in table[t]]
            for peer in rankers.peers():
                if peer == me:
                    continue
                a = [table[t][s][me]["rho"] for t, s in cases]
                b = [table[t][s][peer]["rho"] for t, s in cases]
                out[me].setdefault(peer, {})[group] = paired_counts(a, b, tol=0.02)
    return out


def compute_table(design: Design, data: dict) -> dict:
    """Wall and training time of the runs (seconds), per kind of run and task."""
    out = {}
    for t, entry in data.items():
        out[t] = {"truth_wall_s": [float(sum(r["wall_time_s"] for r in runs)) for runs in entry["truth"]],
                  "short_wall_s": float(sum(r["wall_time_s"] for r in entry["short"])),
                  "beta_s_seed0": float(sum(r["beta_time_s"] for r in entry["truth"][0]))}
    out["short_fraction_of_full"] = design.short_recipe.recipe.epochs / design.full_epochs
    return out


def combined_artefact(signals: dict, dev: list[str], design: Design) -> dict | None:
    """The combined predictor fitted on every development task's short run (what `ncap rank` observes),
    as plain coefficients with its provenance."""
    import datetime
    import subprocess

    train = [(rankers.combined_features(signals[t]["short"]), np.asarray(signals[t]["short"].extra["truth"])) for t in dev]
    model = rankers.fit_combined(train)
    if model is None:
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return rankers.combined_artefact(model, {
        "fitted_on_tasks": dev, "signal": "short", "short_recipe": design.short_recipe.as_dict(),
        "candidates": design.candidate_names, "truth": design.describe()["truth"], "git_commit": commit,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m ncap.bench"})


if __name__ == "__main__":
    sys.exit(main())
