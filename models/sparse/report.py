"""A grid of DST runs (rules × layer densities × fan-in profiles) written as one report: what ``ncap sparse-train``
produces.

``out/report.json`` (settings, per-run accuracy, initial and final topology, fits), ``out/report.md`` (one
table), ``out/fan_in_cv.png``, ``out/dormant.png``, ``out/degree_cv.png`` over training for all runs, and per
run ``out/runs/<label>/``: ``topology.npz`` (per-update degree, fan-in and gradient-norm arrays),
``topology.json`` (per-update rows), ``ccdf_epochs.png`` (degree CCDFs by epoch) and ``ccdf_final_*.png``
(final degrees with power-law / truncated power-law fits).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ncap.jsonsafe import to_jsonable
from ncap.models.sparse.dst import DSTConfig, train_dst
from ncap.models.sparse.plots import plot_ccdfs_by_epoch, plot_series
from ncap.network import plot_degree_ccdfs

__all__ = ["grid_configs", "markdown_report", "run_grid", "run_label", "summarize_run"]


def run_label(cfg: DSTConfig) -> str:
    """``rule`` for dense runs, else ``rule-density-profile[cv]``."""
    if cfg.rule == "dense":
        return "dense"
    cv = "" if not cfg.profile_cv or cfg.profile not in ("lognormal", "powerlaw") else "cv" + "_".join(
        f"{c:g}" for c in cfg.profile_cv)
    return f"{cfg.rule}-{cfg.density}-{cfg.profile}{cv}"


def grid_configs(base: dict, rules: Sequence[str], densities: Sequence[str], profiles: Sequence[str]) -> list[DSTConfig]:
    """One validated config per (rule, density, profile); ``dense`` once. Raises pydantic's ValidationError."""
    configs, seen = [], set()
    for rule in rules:
        for density in densities:
            for profile in profiles:
                cfg = DSTConfig(**{**base, "rule": rule, "density": density, "profile": profile})
                if run_label(cfg) not in seen:
                    seen.add(run_label(cfg))
                    configs.append(cfg)
    return configs


def summarize_run(res: dict) -> dict:
    """The JSON-ready part of a :func:`train_dst` result: accuracy, init, first and last topology rows, fits."""
    rows = res["topology"]
    return {"label": run_label(DSTConfig(**res["config"])), "config": res["config"], "data": res["data"],
            "accuracy": res["accuracy"], "best_accuracy": max(h["val_accuracy"] for h in res["history"]),
            "history": res["history"], "init": res["init"], "first": rows[0] if rows else None,
            "last": rows[-1] if rows else None, "updates": max(len(rows) - 1, 0), "fits": res["fits"],
            "seconds": res["seconds"], "timings": res["timings"]}


def _write_run(res: dict, run_dir: Path) -> list[str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "topology.json").write_text(json.dumps(to_jsonable(res["topology"])))
    arrays = res.get("_arrays")
    if not arrays:
        return []
    np.savez_compressed(run_dir / "topology.npz", **arrays)
    nodes = list(res["topology"][0]["nodes"])
    plots = [plot_ccdfs_by_epoch(arrays, nodes, run_dir / "ccdf_epochs.png", title=run_label(DSTConfig(**res["config"])))]
    plots += plot_degree_ccdfs(res["_degrees"], res["_fits"], run_dir, prefix="ccdf_final")
    return plots


def _dormant_high(node: dict) -> int:
    """Dormant count at the larger relative threshold (63 % of the initial mean degree, sources/002's 110)."""
    return node["dormant_rel"][max(node["dormant_rel"])]


def _series_plots(runs: dict[str, list[dict]], out: Path) -> list[str]:
    if not runs:
        return []
    return [
        plot_series(runs, lambda r: {k: v["fan_in_cv"] for k, v in r["layers"].items()}, out / "fan_in_cv.png",
                    ylabel="fan-in CV", title="fan-in CV per sparse layer"),
        plot_series(runs, lambda r: {k: v["degree_cv"] for k, v in r["nodes"].items() if k != "input"},
                    out / "degree_cv.png", ylabel="degree CV", title="degree CV of hidden node layers"),
        plot_series(runs, lambda r: {k: _dormant_high(v) for k, v in r["nodes"].items() if k != "input"},
                    out / "dormant.png", ylabel="dormant neurons",
                    title="hidden neurons below 63 % of their layer's initial mean degree"),
    ]


def run_grid(configs: Sequence[DSTConfig], data, out: str | Path | None = None, *, progress: bool = False,
             log: Callable[[str], None] | None = None) -> dict:
    """Train every config on ``data`` (a dataset name / path or an ImageDataset loaded once); write the report
    when ``out`` is given. Returns ``{"runs": [summary...], "plots": [...]}``."""
    from tqdm.auto import tqdm

    from ncap.models.data import ImageDataset, load_dataset

    log = log or (lambda _m: None)
    ds = data if isinstance(data, ImageDataset) else load_dataset(data)
    out = Path(out) if out is not None else None
    summaries, series, plots = [], {}, []
    for cfg in tqdm(configs, desc="runs", disable=not progress):
        res = train_dst(cfg, ds, progress=progress)
        label = run_label(cfg)
        log(f"{label}: val accuracy {res['accuracy']:.4f} ({res['seconds']:.1f} s)")
        summaries.append(summarize_run(res))
        if res["topology"]:
            series[label] = res["topology"]
        if out is not None:
            plots += _write_run(res, out / "runs" / label)
    report = {"runs": summaries, "plots": plots}
    if out is not None:
        report["plots"] += _series_plots(series, out)
        (out / "report.json").write_text(json.dumps(to_jsonable(report), indent=1))
        (out / "report.md").write_text(markdown_report(report) + "\n")
    return report


def _fmt(v, spec="{:.2f}") -> str:
    return "–" if v is None else spec.format(v)


def markdown_report(report: dict) -> str:
    """One row per run: accuracy, fan-in CV and max degree (initial → final), dormant and k-shell at the end."""
    head = ["run", "val acc", "updates", "fan-in CV (init → end)", "max degree (init → end)",
            "dormant <63 % / <10 (end)", "k-shell (end)", "corr Ω̂ (end)", "TPL α (end)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["runs"]:
        first, last = r["first"], r["last"]
        if first is None:
            lines.append(f"| {r['label']} | {100 * r['accuracy']:.2f} | – | – | – | – | – | – | – |")
            continue
        hidden = [n for n in last["nodes"] if n != "input"]
        cv = ", ".join(f"{_fmt(first['layers'][n]['fan_in_cv'])} → {_fmt(last['layers'][n]['fan_in_cv'])}"
                       for n in last["layers"])
        mx = ", ".join(f"{first['nodes'][n]['degree_max']} → {last['nodes'][n]['degree_max']}" for n in hidden)
        dorm = ", ".join(f"{_dormant_high(last['nodes'][n])}/{last['nodes'][n]['dormant'].get('10', '–')}" for n in hidden)
        ks = "–" if "kshell" not in last else f"{last['kshell']['k_min']}–{last['kshell']['k_max']}"
        om = ", ".join(_fmt(last["nodes"][n].get("omega_corr_free")) for n in hidden)
        tpl = ", ".join(_fmt((r["fits"].get(n, {}).get("truncated_power_law") or {}).get("alpha")) for n in hidden)
        lines.append(f"| {r['label']} | {100 * r['accuracy']:.2f} | {r['updates']} | {cv} | {mx} | {dorm} | {ks} | {om} | {tpl} |")
    lines += ["", ("Values per sparse layer (fan-in CV) or hidden node layer (others), in layer order. corr Ω̂: "
              "correlation of new connections per free slot with degree at the last update (> 0: preferential "
              "attachment). TPL α: truncated power-law exponent of the final degrees.")]
    return "\n".join(lines)
