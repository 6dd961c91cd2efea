"""Plots of a ranking document: β_eff trajectories, accuracy curves, predicted vs observed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import functools

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

from ncap.capacitance.ranking_rules import RANKING_RULES

# labels come from clients: matplotlib must draw them as text, never read '$...$' as mathtext or hand them to TeX
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _plain_text(fn):
    """Run a plot function with :data:`PLAIN_TEXT` and close its figures whatever happens."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with plt.rc_context(PLAIN_TEXT):
                return fn(*args, **kwargs)
        finally:
            plt.close("all")

    return wrapper


@_plain_text
def plot_ranking(doc, out_dir: Path) -> list[str]:
    """Write trajectories.png and predicted_vs_observed.png of a ``RankingDocument`` into ``out_dir``;
    return the names written (none when no candidate has a trajectory)."""
    out_dir = Path(out_dir)
    ok = [r for r in doc.candidates if r.status == "ok" and r.epoch]
    if not ok:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in ok:
        axes[0].plot(r.epoch, r.beta_eff, marker="o", ms=3, label=r.candidate)
        axes[1].plot(r.epoch, [None if a is None else 100 * a for a in r.val_accuracy], marker="o", ms=3, label=r.candidate)
    axes[0].set(xlabel="epoch", ylabel=f"β_eff ({doc.config.variant})", title="β_eff trajectories")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy curves")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "trajectories.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    predicted = [r for r in ok if r.predicted_accuracy is not None and r.observed_accuracy is not None]
    for r in predicted:
        ax.errorbar(100 * r.observed_accuracy, 100 * r.predicted_accuracy, yerr=100 * (r.predicted_std or 0),
                    fmt="o", capsize=3, label=f"#{r.rank} {r.candidate}")
    lims = ax.get_xlim()
    ax.plot(lims, lims, "k--", lw=0.7)
    ax.set(xlabel="accuracy at last observed epoch (%)", ylabel="predicted final accuracy (%)",
           title="prediction vs last observation")
    if predicted:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "predicted_vs_observed.png", dpi=110)
    plt.close(fig)
    return ["trajectories.png", "predicted_vs_observed.png", *plot_pareto(doc, out_dir)]


@_plain_text
def plot_pareto(doc, out_dir: Path) -> list[str]:
    """pareto.png: the ranking score (the rule the candidates are ranked by, ± its std) against batch-1 latency,
    the Pareto front (computed on that score) joined; [] when no candidate has both."""
    pts = [r for r in doc.candidates if r.score is not None and r.latency_ms.get(1) is not None]
    if not pts:
        return []
    rule = RANKING_RULES[doc.config.ranker]
    label, scale = (f"{rule.label} (%)", 100.0) if rule.percent else (rule.label, 1.0)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in pts:
        ax.errorbar(r.latency_ms[1], scale * r.score, yerr=scale * (r.score_std or 0), fmt="o",
                    capsize=3, color="C3" if r.pareto else "C0")
        ax.annotate(r.candidate, (r.latency_ms[1], scale * r.score), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in pts if r.pareto), key=lambda r: r.latency_ms[1])
    ax.plot([r.latency_ms[1] for r in front], [scale * r.score for r in front], "C3--", lw=1,
            label="Pareto front")
    ax.set_xscale("log")  # plain tick labels: log axes write theirs as mathtext, which PLAIN_TEXT shows raw
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=f"latency per image at batch 1 (ms, {doc.device})", ylabel=label,
           title=f"ranking score ({doc.config.ranker}) against latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "pareto.png", dpi=110)
    plt.close(fig)
    return ["pareto.png"]
