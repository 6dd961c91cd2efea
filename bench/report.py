"""The selection benchmark's report: markdown tables and plots from its results dict (bench/__main__.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ncap.bench import rankers

__all__ = ["headline_lines", "markdown", "plots", "shown_rankers"]


def shown_rankers(table: dict, default: str) -> list[str]:
    """The rankers the summaries show: the chosen default, ncap's Algorithm-1 default, and every peer."""
    return list(dict.fromkeys([default, rankers.NCAP_DEFAULT, *rankers.peers()]))


def _fmt(v, digits=3) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _ci(s: dict, m: str, digits: int) -> str:
    lo, hi = s.get(f"{m}_ci", [np.nan, np.nan])
    return f"{_fmt(s[m], digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def summary_table(summary: dict, default: str) -> list[str]:
    lines = ["| ranker | Spearman ρ [95 % CI] | weighted τ [95 % CI] | top-1 regret, points [95 % CI] |",
             "|---|---|---|---|"]
    for r, s in summary.items():
        name = f"**{r}** (default)" if r == default else r
        name += " ¹" if r in rankers.PARTIAL else ""
        lines.append(f"| {name} | {_ci(s, 'rho', 3)} | {_ci(s, 'tau_w', 3)} | {_ci(s, 'regret', 2)} |")
    return lines


def _mean_over(res: dict, tasks: list[str], sig: str, ranker: str, metric: str = "rho") -> float:
    vals = [res["table"][t][sig][ranker][metric] for t in tasks if ranker in res["table"][t][sig]]
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _signals(res: dict) -> list[str]:
    return list(res["table"][res["tasks"][0]])


def markdown(res: dict) -> str:
    d, default, primary = res["design"], res["default_ranker"], res["primary_signal"]
    frac = d["primary_fraction"]
    lines = [f"# Selection benchmark v2 ({d['name']}){' — PARTIAL' if res['partial'] else ''}", "",
             f"Command: `{res['command']}` — {res['machine']}, {res['bench_wall_time_s']:.0f} s wall (cached runs included).",
             f"Candidates ({len(res['candidates'])}): {', '.join(res['candidates'])}.",
             f"Tasks: development {', '.join(res['dev_tasks']) or '—'}; held out {', '.join(res['held_out']) or '—'}"
             + (f"; dropped {', '.join(f'{t} ({r})' for t, r in res['dropped'].items())}" if res["dropped"] else "")
             + (f"; not yet run: {', '.join(res['missing_tasks'])}" if res["missing_tasks"] else "") + ".",
             (f"Truth: {d['truth']}. Early signals: the prefix of the seed-0 truth run at a fraction of its epochs "
             f"(`prefix@f`), and ncap's own short run with the `ncap rank` defaults (`short`, "
             f"{100 * res['compute']['short_fraction_of_full']:.0f} % of a full fine-tune's epochs)."), ""]
    if res["summaries"]:
        lines += ["## Summary: held-out tasks, then development tasks (regret in accuracy points)", "",
                  *headline_lines(res), ""]
    for group, title in (("held_out", "Held-out tasks"), ("dev", "Development tasks")):
        for sig in (primary, "short"):
            summ = res["summaries"].get(group, {}).get(sig)
            if summ:
                label = f"{100 * frac:g} % of the full compute" if sig == primary else "ncap's short run"
                lines += [f"## {title}, {sig} ({label})", "", *summary_table(summ, default), ""]
    lines += [("¹ LEEP/NCE need a source head (ImageNet models: theirs; random initialisations: their random head; "
              "the zoo saves none) and source accuracy exists for the zoo only: these are scored on the candidates "
              "they cover."), "", *default_lines(res), ""]
    lines += noise_lines(res) + budget_lines(res) + ideas_lines(res) + paired_lines(res) + truth_lines(res)
    return "\n".join(lines)


def headline_lines(res: dict) -> list[str]:
    """One table: every ranker on the held-out tasks (ρ and regret with 95 % intervals, at the primary budget and
    on ncap's short run), then the same on the development tasks (the README's benchmark section opens with it)."""
    default, primary, summ = res["default_ranker"], res["primary_signal"], res["summaries"]
    groups = [g for g in ("held_out", "dev") if g in summ]
    if not groups:
        return []
    head = ["ranker"]
    for g in groups:
        who = "held out" if g == "held_out" else "dev"
        head += [f"{who}: ρ @{primary.split('@')[1]} [95 % CI]", f"{who}: regret @{primary.split('@')[1]}",
                 f"{who}: ρ short [95 % CI]", f"{who}: regret short"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in shown_rankers(res["table"], default):
        name = (f"**{r}** (default)" if r == default else r) + (" ¹" if r in rankers.PARTIAL else "")
        cells = [name]
        for g in groups:
            for sig in (primary, "short"):
                s = summ[g].get(sig, {}).get(r)
                cells += [_ci(s, "rho", 2), _ci(s, "regret", 1)] if s else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def default_lines(res: dict) -> list[str]:
    """Which ranker became `ncap rank`'s default, on what evidence, and the best ranker overall."""
    c, default = res.get("default_choice") or {}, res["default_ranker"]
    if not c:
        return [f"Default ranker: **{default}** (no development task yet: the previous default stays)."]
    line = (f"Default ranker of `ncap rank` and the service: **{default}** (settings "
            f"`{c['ncap_rank_settings']}`): the highest development-task mean ρ on `{c['signal']}` "
            f"({_fmt(c['dev_mean_rho'][default])}) among the rankers `ncap rank` can compute from its own run.")
    if c["best_overall"] != default:
        line += (f" The best ranker overall on the development tasks is **{c['best_overall']}** "
                 f"({_fmt(c['best_overall_dev_mean_rho'])}), which `ncap rank` cannot compute from its own run.")
    return [line]


def noise_lines(res: dict) -> list[str]:
    lines = ["## Noise ceiling and spread of the truth", "",
             ("| task | role | ceiling (mean of seed pairs) | min pair | of the seed mean (Spearman-Brown) | spread of "
              "truths (points) | seed std (points) | kept |"), "|---|---|---|---|---|---|---|---|"]
    for t, tt in res["truth"].items():
        role = "held out" if res["design"]["splits"][t]["held_out"] else "dev"
        lines.append(f"| {t} | {role} | {_fmt(tt['ceiling'])} | {_fmt(tt['ceiling_min'])} | "
                     f"{_fmt(tt.get('ceiling_of_seed_mean'))} | {tt['spread_points']:.1f} | "
                     f"{tt['seed_std_points']:.2f} | {kept_cell(tt)} |")
    return lines + [""]


def kept_cell(tt: dict) -> str:
    if not tt["kept"]:
        return "no: " + tt["reason"]
    return "yes (below 0.9: kept in quick mode only)" if tt.get("below_ceiling_min") else "yes"


def budget_lines(res: dict) -> list[str]:
    sigs = _signals(res)
    lines = []
    for group, tasks in (("development", res["dev_tasks"]), ("held-out", res["held_out"])):
        if not tasks:
            continue
        lines += [f"## Spearman ρ against budget ({group} tasks, mean)", "",
                  "| ranker | " + " | ".join(sigs) + " |", "|---|" + "---|" * len(sigs)]
        for r in shown_rankers(res["table"], res["default_ranker"]):
            lines.append(f"| {r} | " + " | ".join(_fmt(_mean_over(res, tasks, s, r)) for s in sigs) + " |")
        lines.append("")
    return lines


def ideas_lines(res: dict) -> list[str]:
    """Every β_eff configuration on the development tasks (the predictor ideas)."""
    sigs, dev = _signals(res), res["dev_tasks"]
    if not dev:
        return []
    lines = ["## β_eff configurations on the development tasks (mean ρ; * = over half the candidates fell back)",
             "",
             "| configuration | " + " | ".join(sigs) + " |", "|---|" + "---|" * len(sigs)]
    names = [r for r in res["table"][dev[0]][sigs[0]] if rankers.is_configuration(r)]
    for r in names:
        cells = []
        for s in sigs:
            fb = np.mean([res["fallback"][t][s].get(r, 1.0) for t in dev])
            cells.append(_fmt(_mean_over(res, dev, s, r)) + ("*" if fb > 0.5 else ""))
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines + [""]


def paired_lines(res: dict) -> list[str]:
    lines = []
    for me, peers in res["paired"].items():
        lines += [f"## {me} against each peer: win / tie / loss in ρ (tie: within 0.02), over (task, signal) pairs", "",
                  "| peer | development | held out |", "|---|---|---|"]
        for peer, g in peers.items():
            cell = lambda c: f"{c['win']} / {c['tie']} / {c['loss']}" if c else "—"
            lines.append(f"| {peer} | {cell(g.get('dev'))} | {cell(g.get('held_out'))} |")
        lines.append("")
    return lines


def truth_lines(res: dict) -> list[str]:
    tasks = res["tasks"]
    lines = ["## Truth (mean final validation accuracy, %)", "", "| candidate | " + " | ".join(tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for i, c in enumerate(res["candidates"]):
        lines.append(f"| {c} | " + " | ".join(f"{100 * res['truth'][t]['mean'][i]:.1f}" for t in tasks) + " |")
    comp = res["compute"]
    lines += ["", "## Compute", "", "| task | truth runs wall s (per seed) | short runs wall s | β_eff s (seed 0) |",
              "|---|---|---|---|"]
    for t in tasks:
        c = comp[t]
        lines.append(f"| {t} | {' / '.join(f'{v:.0f}' for v in c['truth_wall_s'])} | {c['short_wall_s']:.0f} | "
                     f"{c['beta_s_seed0']:.0f} |")
    return lines + [""]


def plots(res: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigs = [s for s in _signals(res) if s.startswith("prefix@")]
    xs = [float(s.split("@")[1]) for s in sigs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (title, tasks) in zip(axes, (("development tasks", res["dev_tasks"]), ("held-out tasks", res["held_out"]))):
        for r in shown_rankers(res["table"], res["default_ranker"]):
            ax.plot(xs, [_mean_over(res, tasks, s, r) for s in sigs], marker="o", label=r,
                    lw=2.5 if rankers.is_configuration(r) or r == res["default_ranker"] else 1.0)
        ax.set(xscale="log", xlabel="budget (fraction of a full fine-tune)", title=title)
        ax.axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("mean Spearman ρ with the truth")
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "rho_vs_budget.png", dpi=110)
    plt.close(fig)
    tasks, default, primary = res["tasks"], res["default_ranker"], res["primary_signal"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        truth = 100 * np.asarray(res["truth"][t]["mean"])
        for r, marker in ((default, "o"), (rankers.NCAP_DEFAULT, "x")):
            ax.scatter(truth, res["scores"][t][primary][r], marker=marker, label=r, s=18)
        for name, x, y in zip(res["candidates"], truth, res["scores"][t][primary][default]):
            ax.annotate(name, (x, y), fontsize=5)
        ax.set(title=f"{t} ({primary})", xlabel="true final accuracy (%)", ylabel="score")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "pred_vs_true.png", dpi=110)
    plt.close(fig)
