"""Benchmark v3's tables and plot, from ``evaluate_v3``'s results (``results.md``, ``dpa.png``)."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["markdown", "plot"]

SHOWN = ("val_acc", "tse_ema", "curve_extrapolation", "successive_halving", "beta_eff[support,t0=1,smooth=none]",
         "beta_eff[default,t0=1,smooth=none]", "beta_eff[support,t0=2,smooth=median3]", "logme", "leep")


def _num(x, spec: str = ".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt(p: dict | None) -> str:
    if p is None:
        return "—"
    lo, hi = p["dpa_ci"]
    return f"{_num(p['dpa'])} [{_num(lo)}, {_num(hi)}] ({p['pairs']})"


def _task_table(results: dict) -> list[str]:
    lines = ["| task | role | real | decisive pairs (ImageNet) | reliability | seed SD (pt) | kept |",
             "|---|---|---|---|---|---|---|"]
    for t, s in results["tasks"].items():
        lines.append(f"| {t} | {s['role']} | {'yes' if s['real_images'] else 'no'} | {s['decisive_pairs']} "
                     f"({s['decisive_pairs_imagenet']}) | {s['reliability']:.2f} | {s['seed_sd_pt']:.2f} | "
                     f"{'yes' if s['kept'] else 'no (< 10 decisive pairs)'} |")
    return lines


def _truth_table(results: dict) -> list[str]:
    """Truth mean ± seed SD (ddof = 1) per candidate and task, with the input size each ran at."""
    tasks = list(results["tasks"])
    lines = ["| candidate | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for i, cand in enumerate(results["candidates"]):
        cells = []
        for t in tasks:
            seeds = np.array(results["tasks"][t]["truth_seeds"][i], float)
            size = results["tasks"][t]["image_size"][cand]
            cells.append(f"{100 * np.nanmean(seeds):.1f} ± {100 * np.nanstd(seeds, ddof=1):.1f} ({size[-1]} px)")
        lines.append(f"| {cand} | " + " | ".join(cells) + " |")
    return lines


def _ranker_table(results: dict, role: str) -> list[str]:
    pooled = results.get("pooled", {}).get(role, {})
    if not pooled:
        return [f"No {role.replace('_', ' ')} task is complete yet."]
    signals = list(pooled)
    lines = ["| ranker | " + " | ".join(f"{s} ({_fraction(pooled[s])})" for s in signals) + " |",
             "|---|" + "---|" * len(signals)]
    for r in [r for r in SHOWN if any(pooled[s].get(r) for s in signals)]:
        lines.append(f"| {r} | " + " | ".join(_fmt(pooled[s].get(r)) for s in signals) + " |")
    return lines


def _fraction(by_ranker: dict) -> str:
    vals = [p["compute_fraction"] for p in by_ranker.values() if p]
    return f"{100 * np.mean(vals):.0f} %" if vals else "—"


def _budget_table(results: dict, budget: str) -> list[str]:
    view = results.get("budgets", {}).get(budget, {})
    if not view:
        return [f"No signal costs ≤ {float(budget):.0%} of the truth's compute on every task."]
    lines = [("| ranker | signal (compute) | dev DPA [95 % CI] (pairs) | dev regret (pt) | held-out DPA [95 % CI] (pairs) "
              "| held-out regret pt (seed SDs) | held-out P(best) | held-out pick within noise |"),
             "|---|---|---|---|---|---|---|---|"]
    order = sorted(view, key=lambda r: -(view[r]["dev"]["dpa"] if view[r]["dev"] else -1))
    for r in order:
        v, h = view[r], view[r]["held_out"]
        held = (f"{_fmt(h)} | {_num(h['regret_pt'], '.1f')} ({_num(h['regret_sd'], '.1f')}) | {_num(h['p_best'])} | "
                f"{_num(h['within_noise'])}") if h else "— | — | — | —"
        lines.append(f"| {r} | {v['signal']} ({100 * v['dev']['compute_fraction']:.0f} %) | {_fmt(v['dev'])} | "
                     f"{_num(v['dev']['regret_pt'], '.1f')} | {held} |")
    return lines


def _per_task_table(results: dict, signal: str) -> list[str]:
    tasks = list(results.get("per_task", {}))
    lines = ["| ranker | " + " | ".join(f"{t}: DPA / regret pt / P(best)" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for r in SHOWN:
        cells = []
        for t in tasks:
            sig = "training-free" if r in ("logme", "leep") else signal
            m = results["per_task"][t].get(sig, {}).get("rankers", {}).get(r)
            cells.append(f"{_num(m['dpa'])} / {_num(m['regret_pt'], '.1f')} / {_num(m['p_best'])}" if m else "—")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines


def _goal_lines(results: dict) -> list[str]:
    g = results.get("goal")
    if not g:
        return []
    if "held_out" not in g:
        return [f"**Goal: missed** ({g['reason']}).", ""]
    h, checks = g["held_out"], g["checks"]
    worst = min(g["differences"].items(), key=lambda kv: kv[1]["ci"][0]) if g["differences"] else None
    out = [(f"**Goal ({', '.join(g['tasks'])}, held out, real images; ≤ {g['budget']:.0%} of the truth's compute): "
           f"{'met' if g['met'] else 'missed'}.** The default `{g['ranker']}` read on `{g['signal']}` "
           f"({100 * h['compute_fraction']:.0f} %): DPA {_fmt(h)} (target ≥ {g['dpa']}: "
           f"{'yes' if checks['dpa'] else 'no'}), regret {h['regret_pt']:.2f} pt (target ≤ {g['regret_pt']}: "
           f"{'yes' if checks['regret'] else 'no'}), ahead of every peer at the same budget with a paired 95 % "
           f"interval: {'yes' if checks['ahead_of_every_peer'] else 'no'}.")]
    if worst:
        out[-1] += (f" Its weakest lead: against `{worst[0]}`, {worst[1]['diff']:+.2f} "
                    f"[{worst[1]['ci'][0]:+.2f}, {worst[1]['ci'][1]:+.2f}].")
    return out + [""]


def markdown(results: dict) -> str:
    d = results["design"]
    out = ["# Selection benchmark v3: real transfer at native size, scored on decisive pairs", "",
           (f"`{results['command']}` ({results['machine']}). Design chosen {d['date']} (`bench/design_v3.py`); "
            f"truth: {d['truth']}. Compute: FLOPs as a fraction of one truth seed (`bench/run_flops.py`)."), ""]
    if results.get("missing_tasks"):
        out += [f"**Partial**: runs missing for {', '.join(results['missing_tasks'])}.", ""]
    out += ["## Tasks", "", *_task_table(results), "", "Truth: mean ± SD over the seeds, in %, and the input size.",
            "", *_truth_table(results), ""]
    if results.get("default_ranker"):
        out += [("Default of `ncap rank` (best pooled DPA on the development tasks, `short` signal, product-computable): "
                 f"**{results['default_ranker']}**."), "", *_goal_lines(results)]
    for budget in results.get("budgets", {}):
        out += [f"## At ≤ {float(budget):.0%} of the truth's compute", "",
                ("Each ranker on the signal within the budget with its best pooled development DPA (chosen without "
                 "the held-out tasks)."), "", *_budget_table(results, budget), ""]
    for role in ("dev", "held_out"):
        out += [f"## DPA [95 % CI] (decisive pairs) by signal, {role.replace('_', ' ')} tasks pooled", "",
                *_ranker_table(results, role), ""]
    out += ["## Per task, `short` signal (`ncap rank` itself; LogME and LEEP training-free)", "",
            *_per_task_table(results, "short"), ""]
    cal = results.get("calibration")
    if cal:
        out += ["## Calibration: one seed of `trainable=all` against the `top` truth", "",
                (f"{cal['task']} at {cal['image_size'][-1]} px: Spearman ρ {cal['rho']:.2f}, DPA {_num(cal['dpa'])} on "
                 f"{cal['pairs']} decisive pairs."), "",
                "| candidate | `all`, 1 seed (%) | `top` truth (%) |", "|---|---|---|",
                *(f"| {c} | {100 * a:.1f} | {100 * t:.1f} |" for c, a, t in
                  zip(cal["candidates"], cal["all_accuracy"], cal["top_truth"])), ""]
    return "\n".join(out) + "\n"


def plot(results: dict, path) -> None:
    """Pooled DPA against the compute fraction of each signal, per ranker: development and held-out tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = [r for r in ("dev", "held_out") if results.get("pooled", {}).get(r)]
    fig, axes = plt.subplots(1, max(len(roles), 1), figsize=(6 * max(len(roles), 1), 4.2), squeeze=False)
    for ax, role in zip(axes[0], roles):
        pooled = results["pooled"][role]
        for k, ranker in enumerate(SHOWN):
            for family, style in (("prefix", "-"), ("short", "--")):
                pts = sorted((p["compute_fraction"], p["dpa"]) for sig, by in pooled.items()
                             if sig.startswith(family) and sig != "short-dense" and (p := by.get(ranker)))
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, style, marker="o", ms=3, color=f"C{k}", label=ranker if family == "prefix" else None)
            free = pooled.get("training-free", {}).get(ranker)
            if free:
                ax.plot([free["compute_fraction"]], [free["dpa"]], "s", color=f"C{k}", label=ranker)
        for b in results.get("budgets", {}):
            ax.axvline(float(b), color="grey", lw=0.8, ls=":")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set(xlabel="compute, fraction of one truth seed (FLOPs)", ylabel="DPA (decisive pairs, pooled)",
               title=f"{role.replace('_', ' ')} tasks (solid: truth prefix, dashed: ncap rank's run)", ylim=(0, 1))
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
