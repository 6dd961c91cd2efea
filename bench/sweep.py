"""Probe-width sweep and seed replication of the v1 benchmark (bench/results/full*, kept for the record; the
v2 selection benchmark measures its noise ceiling itself).

    python -m ncap.bench.sweep          # reads bench/results/full*/results.json, writes bench/results/sweep.{md,json,png}

The full*/ folders were written by the v1 benchmark (``python -m ncap.bench [--probe-width W] [--seed S]`` up to
commit 4f87011), whose options are gone; this summary still reads them.

Decision rule (development tasks only, seed 0, the same rule as ``python -m ncap.bench`` uses for variant,
t0 and number of observations): the width whose best ncap configuration has the highest mean Spearman ρ
at the largest early budget k, counting only configurations that really use β_eff there (at most half
the candidates fell back to their last accuracy). The held-out task is shown, never used. The seed-1 replication (other train/validation split, other
noise draw, other initialisation and batch order) gives two things: the **noise ceiling** — Spearman ρ
between the two seeds' ground truths, the best any ranker can expect to reach against one seed's truth
— and a check whether the seed-0 choice of variant and t0 holds on fresh runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ncap.bench.evaluation import spearman
from ncap.bench.options import PROBE_WIDTH, SEED

RESULTS = Path(__file__).parent / "results"


def results_name(quick: bool, probe_width: int = PROBE_WIDTH, seed: int = SEED) -> str:
    """Folder of one v1 benchmark recipe under bench/results/: full, quick, full-w128, full-s1, ..."""
    return (("quick" if quick else "full") + (f"-w{probe_width}" if probe_width != PROBE_WIDTH else "")
            + (f"-s{seed}" if seed != SEED else ""))


def load(results: Path, name: str) -> dict | None:
    path = results / name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def dev_mean(res: dict, ranker: str, k: str | None = None, metric: str = "spearman") -> float:
    """Mean of ``metric`` over the development tasks (and over every k when ``k`` is None)."""
    dev = [t for t in res["tasks"] if t != res["held_out"]]
    ks = [k] if k is not None else list(res["table"][dev[0]])
    vals = [res["table"][t][kk][ranker].get(metric) for t in dev for kk in ks if ranker in res["table"][t][kk]]
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def held_out(res: dict, ranker: str, k: str, metric: str = "spearman") -> float:
    v = res["table"][res["held_out"]][k].get(ranker, {}).get(metric, np.nan)
    return float(v) if v is not None else float("nan")


def ncap_configs(res: dict) -> list[str]:
    t = res["tasks"][0]
    return [n for n in res["table"][t][next(iter(res["table"][t]))] if n.startswith("ncap[")]


def k_compare(res: dict) -> str:
    """The budget at which configurations are compared: the largest k of the grid."""
    return max(res["table"][res["tasks"][0]], key=float)


def config_score(res: dict, config: str) -> float:
    """Dev-task mean ρ at the comparison budget, NaN where the configuration mostly fell back."""
    k = k_compare(res)
    fell_back = dev_mean(res, config, k, "fallback_rate")
    return float("nan") if np.isfinite(fell_back) and fell_back > 0.5 else dev_mean(res, config, k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.bench.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--replicate-seed", type=int, default=1)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder holding full*/results.json; outputs go there")
    args = ap.parse_args(argv)
    results = args.results
    runs = {w: load(results, results_name(False, w)) for w in args.widths}
    missing = [w for w, r in runs.items() if r is None]
    if missing:
        print("missing results for widths " + ", ".join(map(str, missing)) + ": run "
              + " && ".join(f"python -m ncap.bench --probe-width {w}" for w in missing), file=sys.stderr)
        return 2
    k_star = k_compare(next(iter(runs.values())))  # every width shares the grid of k
    out: dict = {"widths": {}, "k": k_star}
    lines = ["# Probe width sweep and seed replication", "",
             ("Commands: `make bench-sweep`, i.e. `python -m ncap.bench --probe-width W` for each width (128 with "
             f"`--max-magnitude-flops 1e12`), `python -m ncap.bench --seed {args.replicate_seed}`, then `python -m ncap.bench.sweep`. Same 8 candidates × 4 tasks and recipe as "
             "`bench/results/full` except for the varied setting. ρ = Spearman with the final accuracy; "
             "“dev” = mean over the 3 development tasks; “all k” also averages k ∈ {0.25, 0.5, 0.75} epochs; "
             f"configurations are compared at the largest k ({k_star})."), "",
             "## Width (seed 0)", "",
             (f"| probe width | best ncap config (dev) | ρ dev, all k | ρ dev, k={k_star} | regret dev, k={k_star} "
             f"| ρ held-out, k={k_star} | val-acc@k ρ dev, k={k_star} | β_eff tracking s (all tasks) |"),
             "|---|---|---|---|---|---|---|---|"]
    best_w, best_val = None, -np.inf
    for w, res in runs.items():
        configs = {c: config_score(res, c) for c in ncap_configs(res)}
        best = max(configs, key=lambda c: np.nan_to_num(configs[c], nan=-9))
        row = {"best_config": best, "dev_rho_all_k": dev_mean(res, best), "dev_rho_by_config": configs,
               "dev_rho_k": configs[best], "dev_regret_k": dev_mean(res, best, k_star, "top1_regret"),
               "held_out_rho_k": held_out(res, best, k_star), "val_acc_dev_rho_k": dev_mean(res, "val-acc@k", k_star),
               "beta_time_s": float(sum(res["compute"]["beta_time_s"].values())),
               "truth": res["truth"]}
        out["widths"][w] = row
        score = np.nan_to_num(configs[best], nan=-9)
        if score > best_val or (score == best_val and w == PROBE_WIDTH):  # a tie keeps the incumbent
            best_w, best_val = w, score
        lines.append(f"| {w} | {best} | {row['dev_rho_all_k']:.3f} | {row['dev_rho_k']:.3f} | {row['dev_regret_k']:.2f} | "
                     f"{row['held_out_rho_k']:.3f} | {row['val_acc_dev_rho_k']:.3f} | {row['beta_time_s']:.0f} |")
    out["chosen_width"] = best_w
    lines += ["", f"Chosen by the rule above: **probe width {best_w}** (dev ρ {best_val:.3f} at the largest k).", ""]
    # the truth changes with the probe width too: how much?
    tasks = runs[args.widths[0]]["tasks"]
    cands = runs[args.widths[0]]["candidates"]
    lines += ["Agreement of the ground truths between widths (Spearman ρ of final accuracies, per task): "]
    for i, wa in enumerate(args.widths):
        for wb in args.widths[i + 1:]:
            rhos = [spearman([runs[wa]["truth"][t][c] for c in cands], [runs[wb]["truth"][t][c] for c in cands]) for t in tasks]
            lines.append(f"- width {wa} vs {wb}: " + ", ".join(f"{t} {r:.2f}" for t, r in zip(tasks, rhos)))
    lines.append("")
    out["replications"] = {}
    for w, res in runs.items():
        rep = load(results, results_name(False, w, args.replicate_seed))
        if rep is not None:
            section, out["replications"][w] = replication(res, rep, w, args.replicate_seed, k_star)
            lines += section
    (results / "sweep.json").write_text(json.dumps(out, indent=1, default=float))
    (results / "sweep.md").write_text("\n".join(lines))
    plot(runs, results / "sweep.png")
    print("\n".join(lines))
    return 0


def replication(base: dict, rep: dict, width: int, seed: int, k_star: str) -> tuple[list[str], dict]:
    """Markdown lines and numbers comparing the seed-0 benchmark at one width with its seed replicate."""
    tasks, cands = base["tasks"], base["candidates"]
    dev = [t for t in tasks if t != base["held_out"]]
    ceiling = {t: spearman([base["truth"][t][c] for c in cands], [rep["truth"][t][c] for c in cands]) for t in tasks}
    lines = [f"## Seed replication (width {width}, seed 0 vs seed {seed})", "",
             ("**Noise ceiling** — Spearman ρ between the final accuracies of two full fine-tunes that differ "
              "only in seed: " + ", ".join(f"{t} {ceiling[t]:.2f}" for t in tasks)
              + f" (dev mean {np.mean([ceiling[t] for t in dev]):.2f}). No ranker can be expected to agree with one "
              "seed's truth much better than another seed's truth does."), "",
             (f"| ranker | ρ dev seed 0, k={k_star} | ρ dev seed {seed}, k={k_star} | ρ dev both seeds, largest k "
              f"| ρ held-out seed 0 | ρ held-out seed {seed} |"), "|---|---|---|---|---|---|"]
    shown = ncap_configs(base) + ["val-acc@k", "tse-ema", "curve-extrapolation", "successive-halving",
                                  "logme", "source-accuracy", "combined[t0=0]", "combined[t0=1]", "combined[t0=2]"]
    rows = {}
    for name in shown:
        score = config_score if name.startswith("ncap[") else (lambda res, n: dev_mean(res, n, k_compare(res)))
        per_seed = [v for v in (score(base, name), score(rep, name)) if np.isfinite(v)]
        both = float(np.mean(per_seed)) if per_seed else float("nan")
        r = rows[name] = {"dev_s0_k": dev_mean(base, name, k_star), "dev_s1_k": dev_mean(rep, name, k_star), "dev_both": both,
                          "held_s0": held_out(base, name, k_star), "held_s1": held_out(rep, name, k_star)}
        mark = "**" if name == base["chosen"]["ncap"] else ""
        lines.append(f"| {mark}{name}{mark} | {r['dev_s0_k']:.3f} | {r['dev_s1_k']:.3f} | {both:.3f} | {r['held_s0']:.3f} "
                     f"| {r['held_s1']:.3f} |")
    best_both = max((n for n in rows if n.startswith("ncap[")), key=lambda n: np.nan_to_num(rows[n]["dev_both"], nan=-9))
    lines += ["", (f"Best ncap configuration on the development tasks of both seeds together: **{best_both}** "
                   f"(seed 0 alone chose {base['chosen']['ncap']}, in bold)."), ""]
    return lines, {"noise_ceiling": ceiling, "rankers": rows, "best_ncap_both_seeds": best_both}


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = list(runs)
    configs = ncap_configs(next(iter(runs.values())))
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in configs:
        ax.plot(widths, [dev_mean(runs[w], c) for w in widths], marker="o", label=c, lw=1.2)
    ax.plot(widths, [dev_mean(runs[w], "val-acc@k") for w in widths], "k--", marker="s", label="val-acc@k", lw=1.5)
    ax.set(xscale="log", xticks=widths, xticklabels=[str(w) for w in widths], xlabel="probe width (first hidden layer)",
           ylabel="Spearman ρ, dev tasks, mean over k", title="Probe width sweep (seed 0)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
