"""Model-selection benchmark: does β_eff pick better than the alternatives users already have?

    python -m ncap.bench            # full: 8 zoo candidates × 4 tasks, 8-epoch fine-tunes (cached)
    python -m ncap.bench --quick    # ≤ 5 min on 2 cores: 5 candidates × 2 tasks, 6 epochs, 600 training images
    ncap bench [--quick]       # the same

Writes bench/results/{full,quick}/: results.json (every number), results.md (tables), rho_vs_k.png,
pred_vs_true.png, beta_trajectories.png. Defaults are chosen on the development tasks only; the held-out
task (bench.tasks.HELD_OUT) is reported separately and never used for a choice.
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

from ncap.bench import rankers
from ncap.bench.evaluation import spearman, top1_regret, weighted_tau
from ncap.bench.options import add_arguments, command, results_name
from ncap.bench.runs import BenchRecipe, full_run
from ncap.bench.tasks import HELD_OUT, TASKS
from ncap.models import zoo

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("default", "support", "magnitude")
T0S = (0, 1, 2)
STRIDES = (1, 2)  # every observation (8 per epoch) or every 2nd (4 per epoch): the number of observations


def score_all(task_runs: dict[str, list[dict]], task: str, k: float, recipe: BenchRecipe, dev_tasks) -> tuple[dict, dict]:
    """Scores of every ranker on one task at budget k: {ranker name: array (n_candidates,)}, and for the
    ncap configurations the fraction of candidates whose prediction fell back to the last accuracy."""
    runs = task_runs[task]
    out, fallback = {}, {}
    for v in VARIANTS:
        for t0 in T0S:
            for stride in STRIDES:
                name = rankers.ncap_name(v, t0, stride)
                preds = [rankers.ncap_prediction(r, k, v, t0, stride) for r in runs]
                out[name] = np.array([np.nan if p is None else p.accuracy for p in preds])
                fallback[name] = float(np.mean([p is None or p.method == "fallback_last" for p in preds]))
    out["val-acc@k"] = np.array([rankers.val_acc_score(r, k) for r in runs])
    out["tse-ema"] = np.array([rankers.tse_score(r, k) for r in runs])
    out["curve-extrapolation"] = np.array([rankers.lc_score(r, k, recipe.full_epochs) for r in runs])
    out["logme"] = np.array([r["logme"] for r in runs])
    out["source-accuracy"] = np.array([r["source_accuracy"] for r in runs])
    out["successive-halving"] = rankers.successive_halving_scores(runs, k, recipe.evals_per_epoch)
    train_tasks = [t for t in dev_tasks if t != task]  # leave-one-task-out; the held-out task never trains
    if train_tasks:
        train = [r for t in train_tasks for r in task_runs[t]]
        for t0 in T0S:
            out[f"combined[t0={t0}]"] = rankers.combined_scores(train, runs, k, t0)
    return out, fallback


def metrics(scores: np.ndarray, truth: np.ndarray) -> dict:
    if np.isnan(scores).all():
        return {"spearman": np.nan, "weighted_tau": np.nan, "top1_regret": np.nan}
    return {"spearman": spearman(scores, truth), "weighted_tau": weighted_tau(scores, truth),
            "top1_regret": 100 * top1_regret(scores, truth)}


def _finite_mean(vals) -> float:
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed :func:`bench.options.add_arguments` options."""
    t_start = time.perf_counter()
    recipe_options = {"probe_width": args.probe_width, "seed": args.seed}
    if args.max_magnitude_flops is not None:
        recipe_options["max_magnitude_flops"] = args.max_magnitude_flops
    if args.quick:
        recipe = BenchRecipe.make(full_epochs=6, max_train=600, evals_per_epoch=9, extra_variants_until=0.75,
                                  **recipe_options)
        names, tasks = list(zoo.DEMO_CANDIDATES), ["digits", HELD_OUT]
        ks = [0.25, 0.5, 0.75]
        out_dir = args.out or RESULTS / results_name(True, args.probe_width, args.seed)
    else:
        recipe = BenchRecipe.make(full_epochs=8, evals_per_epoch=8, extra_variants_until=0.75, **recipe_options)
        names, tasks = [n for n in zoo.ZOO if n not in ("mobilenetv3-short", "resnet10t-mnist")], list(TASKS)
        ks = [0.25, 0.5, 0.75]  # <= 10 % of the 8-epoch full budget
        out_dir = args.out or RESULTS / results_name(False, args.probe_width, args.seed)
    dev_tasks = [t for t in tasks if t != HELD_OUT]
    progress = not args.quiet
    cards = {c["name"]: c for c in zoo.ensure(names, progress=progress)}
    specs = [zoo.zoo_spec(n, progress=progress) for n in names]
    task_runs: dict[str, list[dict]] = {}
    n_total, done = len(tasks) * len(specs), 0
    for task in tasks:
        task_runs[task] = []
        for spec in specs:
            done += 1
            t0 = time.perf_counter()
            run = full_run(spec, task, recipe, rebuild=args.rebuild, progress=progress)
            run["source_accuracy"] = cards[spec.name]["source_accuracy"]
            task_runs[task].append(run)
            if progress:
                print(f"[{done}/{n_total}] {task:16s} {spec.name:20s} final acc {100 * rankers.final_accuracy(run):5.1f}%"
                      f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    truth = {t: np.array([rankers.final_accuracy(r) for r in task_runs[t]]) for t in tasks}
    table: dict = {}  # table[task][k][ranker] = metrics
    for task in tasks:
        table[task] = {}
        for k in ks:
            sc, fallback = score_all(task_runs, task, k, recipe, dev_tasks)
            table[task][k] = {name: metrics(s, truth[task]) for name, s in sc.items()}
            for name, rate in fallback.items():
                table[task][k][name]["fallback_rate"] = rate
    rankers_all = list(table[tasks[0]][ks[0]])

    def mean_over(task_list, k, name, key):
        return _finite_mean([table[t][k][name][key] for t in task_list if name in table[t][k]])

    # Defaults from the development tasks only. ncap configurations are compared at the largest budget in
    # the grid, where each has most points; a cell where over half the candidates fell back to the last
    # accuracy is val-acc@k in disguise and does not count for ncap (see README, "What we chose").
    ncap_names = [n for n in rankers_all if n.startswith("ncap[")]

    def uses_beta(name, k):
        return mean_over(dev_tasks, k, name, "fallback_rate") <= 0.5

    k_cmp = max(ks)
    dev_rho = {n: mean_over(dev_tasks, k_cmp, n, "spearman") if uses_beta(n, k_cmp) else float("nan") for n in ncap_names}
    best_ncap = max(dev_rho, key=lambda n: (np.nan_to_num(dev_rho[n], nan=-9), n == "ncap[magnitude,t0=1]"))
    per_k = {k: mean_over(dev_tasks, k, best_ncap, "spearman") for k in ks if uses_beta(best_ncap, k)}
    best_rho = max(v for v in per_k.values() if np.isfinite(v))
    chosen_k = min(k for k, v in per_k.items() if np.isfinite(v) and v >= best_rho - 0.02)
    comb_names = [n for n in rankers_all if n.startswith("combined[")]
    best_comb = max(comb_names, key=lambda n: np.nan_to_num(mean_over(dev_tasks, k_cmp, n, "spearman"), nan=-9)) if comb_names else None
    shown = [best_ncap] + ([best_comb] if best_comb else []) + [
        "val-acc@k", "tse-ema", "curve-extrapolation", "successive-halving", "logme", "source-accuracy"]
    summary = {
        "recipe": recipe.as_dict(), "recipe_key": recipe.key(), "candidates": names, "tasks": tasks, "held_out": HELD_OUT,
        "ks": ks, "chosen": {"ncap": best_ncap, "combined": best_comb, "k": chosen_k, "compared_at_k": k_cmp,
                             "dev_mean_spearman_by_ncap_config": dev_rho},
        "truth": {t: dict(zip(names, truth[t].tolist())) for t in tasks},
        "table": {t: {str(k): v for k, v in table[t].items()} for t in tasks},
        "compute": {"full_epochs": recipe.full_epochs,
                    "wall_time_full_s": {t: float(sum(r["wall_time_s"] for r in task_runs[t])) for t in tasks},
                    "beta_time_s": {t: float(sum(r["beta_time_s"] for r in task_runs[t])) for t in tasks}},
        "command": command(args),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "bench_wall_time_s": time.perf_counter() - t_start,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    md = render_markdown(summary, table, shown, dev_tasks, ks, chosen_k, mean_over, args.quick)
    (out_dir / "results.md").write_text(md)
    plot_all(out_dir, table, shown, dev_tasks, ks, task_runs, truth, best_ncap, chosen_k, names, tasks)
    print(md)
    return 0


def render_markdown(summary, table, shown, dev_tasks, ks, chosen_k, mean_over, quick) -> str:
    r = summary["recipe"]
    cmd = summary["command"]
    lines = [f"# Model-selection benchmark ({'quick' if quick else 'full'})", "",
             f"Command: `{cmd}` — {summary['machine']}, {summary['bench_wall_time_s']:.0f} s wall (including cached runs).",
             (f"Candidates ({len(summary['candidates'])}): {', '.join(summary['candidates'])}. "
             f"Tasks: {', '.join(summary['tasks'])} (held out: **{summary['held_out']}**)."),
             f"Ground truth: mean validation accuracy over the last epoch of a full fine-tune of {r['full_epochs']} epochs (AdamW lr {r['lr']}, "
             f"batch {r['batch_size']}, probe width {r['probe_width']}, seed {r['seed']}"
             + (f", {r['max_train']} training images" if r["max_train"] else "") + "), same recipe for every candidate.",
             (f"Chosen on the development tasks (configurations compared at k = {summary['chosen']['compared_at_k']}): "
              f"**{summary['chosen']['ncap']}**, k = **{chosen_k} epochs** "
             f"({100 * chosen_k / r['full_epochs']:.0f} % of the full budget); best combined: {summary['chosen']['combined']}."), ""]
    for label, tl in (("development tasks (mean)", dev_tasks), (f"held-out task {summary['held_out']}", [summary["held_out"]])):
        if not all(t in table for t in tl):
            continue
        lines += [f"## At k = {chosen_k} epochs — {label}", "",
                  "| ranker | Spearman ρ | weighted τ | top-1 regret (points) |", "|---|---|---|---|"]
        for name in shown:
            if name is None:
                continue
            vals = [mean_over(tl, chosen_k, name, m) for m in ("spearman", "weighted_tau", "top1_regret")]
            lines.append(f"| {name} | " + " | ".join("—" if not np.isfinite(v) else f"{v:.3f}" if i < 2 else f"{v:.2f}"
                                                    for i, v in enumerate(vals)) + " |")
        lines.append("")
    lines += ["## Spearman ρ vs budget k (development tasks, mean)", "",
              "| ranker | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name in sorted(table[dev_tasks[0]][ks[0]]):
        cells = []
        for k in ks:
            v = mean_over(dev_tasks, k, name, "spearman")
            fell_back = name.startswith("ncap[") and mean_over(dev_tasks, k, name, "fallback_rate") > 0.5
            cells.append("—" if not np.isfinite(v) else f"{v:.3f}" + ("*" if fell_back else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", ("\\* more than half of the candidates had too few usable observations for the β_eff regression and fell "
              "back to their last accuracy (= val-acc@k); such cells do not count when choosing ncap's configuration."),
              "", "## Ground truth (final accuracy, %)", "", "| candidate | " + " | ".join(summary["tasks"]) + " |",
              "|---|" + "---|" * len(summary["tasks"])]
    for c in summary["candidates"]:
        lines.append(f"| {c} | " + " | ".join(f"{100 * summary['truth'][t][c]:.1f}" for t in summary["tasks"]) + " |")
    comp = summary["compute"]
    lines += ["", "## Compute", "",
              f"Early budget k = {chosen_k} epochs is {100 * chosen_k / r['full_epochs']:.1f} % of the full fine-tunes' epochs. "
              "Full fine-tune wall time per task (all candidates): "
              + ", ".join(f"{t} {v:.0f} s" for t, v in comp["wall_time_full_s"].items())
              + "; of which β_eff tracking (all recorded variants): "
              + ", ".join(f"{t} {v:.0f} s" for t, v in comp["beta_time_s"].items()) + ".", ""]
    return "\n".join(lines)


def plot_all(out_dir, table, shown, dev_tasks, ks, task_runs, truth, best_ncap, chosen_k, names, tasks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, tl, title in ((axes[0], dev_tasks, "development tasks (mean)"), (axes[1], [HELD_OUT], f"held out: {HELD_OUT}")):
        if not all(t in table for t in tl):
            continue
        for name in shown:
            if name is None:
                continue
            ys = [_finite_mean([table[t][k][name]["spearman"] for t in tl if name in table[t][k]]) for k in ks]
            ax.plot(ks, ys, marker="o", label=name, lw=2.5 if name.startswith("ncap") else 1.2)
        ax.set(xlabel="early budget k (epochs)", title=title)
        ax.axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("Spearman ρ with final accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "rho_vs_k.png", dpi=110)
    plt.close(fig)
    variant, t0, stride = rankers.parse_ncap_name(best_ncap)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        pred = [rankers.ncap_score(r, chosen_k, variant, t0, stride) for r in task_runs[task]]
        ax.scatter(100 * truth[task], 100 * np.asarray(pred))
        for n, xv, yv in zip(names, truth[task], pred):
            ax.annotate(n, (100 * xv, 100 * yv), fontsize=6)
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.6)
        ax.set(title=task, xlabel="true final accuracy (%)", ylabel=f"{best_ncap} at k={chosen_k} (%)")
    fig.tight_layout()
    fig.savefig(out_dir / "pred_vs_true.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        for r in task_runs[task]:
            ax.plot(r["epoch"], r["beta_eff"]["default"], lw=1, label=r["candidate"])
        ax.set(title=task, xlabel="epoch", ylabel="β_eff (default)", yscale="symlog")
    np.atleast_1d(axes)[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "beta_trajectories.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
