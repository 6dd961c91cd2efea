"""Benchmark v3's tables and plot, from ``evaluate_v3``'s results (``results.md``, ``dpa.png``)."""
from __future__ import annotations

import numpy as np

__all__ = ["markdown", "plot"]

SHOWN = ("val_acc", "tse_ema", "curve_extrapolation", "successive_halving", "beta_eff[support,t0=1,smooth=none]",
         "beta_eff[default,t0=1,smooth=none]", "beta_eff[support,t0=2,smooth=median3]")


def _fmt(p: dict | None) -> str:
    if p is None:
        return "—"
    lo, hi = p["dpa_ci"]
    return f"{p['dpa']:.2f} [{lo:.2f}, {hi:.2f}] ({p['pairs']})"


def _task_table(results: dict) -> list[str]:
    lines = ["| task | role | real | decisive pairs (ImageNet) | reliability | seed SD (pt) | kept |",
             "|---|---|---|---|---|---|---|"]
    for t, s in results["tasks"].items():
        lines.append(f"| {t} | {s['role']} | {'yes' if s['real_images'] else 'no'} | {s['decisive_pairs']} "
                     f"({s['decisive_pairs_imagenet']}) | {s['reliability']:.2f} | {s['seed_sd_pt']:.2f} | "
                     f"{'yes' if s['kept'] else 'no (< 10 decisive pairs)'} |")
    return lines


def _ranker_table(results: dict, role: str) -> list[str]:
    pooled = results.get("pooled", {}).get(role, {})
    if not pooled:
        return [f"No {role} task is complete yet."]
    signals = list(pooled)
    lines = ["| ranker | " + " | ".join(f"{s} (compute {_fraction(pooled[s])})" for s in signals) + " |",
             "|---|" + "---|" * len(signals)]
    names = [r for r in SHOWN if any(pooled[s].get(r) for s in signals)]
    names += sorted({r for s in signals for r, p in pooled[s].items() if p and r not in names})[:0]
    for r in names:
        lines.append(f"| {r} | " + " | ".join(_fmt(pooled[s].get(r)) for s in signals) + " |")
    return lines


def _fraction(by_ranker: dict) -> str:
    vals = [p["compute_fraction"] for p in by_ranker.values() if p]
    return f"{100 * np.mean(vals):.0f} %" if vals else "—"


def markdown(results: dict) -> str:
    d = results["design"]
    out = ["# Selection benchmark v3: real transfer at native size, scored on decisive pairs", "",
           (f"`{results['command']}` ({results['machine']}). Design chosen {d['date']} (`bench/design_v3.py`); "
            f"truth: {d['truth']}."), ""]
    if results.get("missing_tasks"):
        out += [f"**Partial**: runs missing for {', '.join(results['missing_tasks'])}.", ""]
    out += ["## Tasks", "", *_task_table(results), ""]
    if results.get("default_ranker"):
        out += [("Default of `ncap rank` (best pooled DPA on the development tasks, `short` signal, product-computable): "
                 f"**{results['default_ranker']}**."), ""]
    for role in ("dev", "held_out"):
        out += [f"## DPA [95 % CI] (decisive pairs), {role.replace('_', ' ')} tasks pooled", "",
                *_ranker_table(results, role), ""]
    cal = results.get("calibration")
    if cal:
        out += ["## Calibration: one seed of `trainable=all` against the `top` truth", "",
                (f"{cal['task']} at {cal['image_size']}: Spearman ρ {cal['rho']:.2f}, DPA {cal['dpa']:.2f} on "
                 f"{cal['pairs']} decisive pairs."), ""]
    return "\n".join(out) + "\n"


def plot(results: dict, path) -> None:
    """DPA with its interval per ranker and signal, development tasks pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = results.get("pooled", {}).get("dev", {})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(pooled), 1)
    for k, (sig, by_ranker) in enumerate(pooled.items()):
        names = [r for r in SHOWN if by_ranker.get(r)]
        x = np.arange(len(names)) + k * width
        vals = np.array([by_ranker[r]["dpa"] for r in names])
        ci = np.array([by_ranker[r]["dpa_ci"] for r in names]).reshape(-1, 2)
        ax.bar(x, vals, width, yerr=[vals - ci[:, 0], ci[:, 1] - vals], label=sig, capsize=2)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right", fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("DPA (development tasks pooled)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
