"""A ranking job end to end: dataset → harness per candidate → predictions → ranking document.

The same function backs ``ncap rank`` and the web service. The ranking document (``ranking.json``):

    {"candidates": [ {candidate, rank, predicted_accuracy, predicted_std, p_best, observed_accuracy,
                      beta_eff: [...], val_accuracy: [...], train_loss: [...], epoch: [...], status,
                      error, prediction_flags, prediction_method, beta_numerator, beta_denominator,
                      beta_eff_variants, wall_time_s, beta_time_s}, ... ],          # sorted by rank
     "config": HarnessConfig, "dataset": {...}, "plots": [file names], "ncap_version": ...}
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ncap.capacitance.predictor import p_best, predict_final_accuracy, rank_order
from ncap.models.harness import Cancelled, CandidateRun, HarnessConfig, fine_tune_candidate

__all__ = ["Cancelled", "rank_runs", "resolve_candidates", "run_ranking"]
SCHEMA_KEYS = ("candidate", "rank", "predicted_accuracy", "predicted_std", "p_best", "observed_accuracy",
               "beta_eff", "val_accuracy", "train_loss", "status")


def resolve_candidates(candidates, progress: bool = True):
    """Candidate strings (zoo names, ``arch``, ``arch=weights``, ``arch=random``) → CandidateSpecs.
    ``None`` → the demo zoo. Zoo entries are pretrained and cached on first use."""
    from ncap.models import zoo
    from ncap.models.candidates import parse_candidates

    if candidates is None:
        candidates = list(zoo.DEMO_CANDIDATES)
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",") if c.strip()]
    if not candidates:
        raise ValueError("no candidates given")
    specs, names = [], set()
    for text in candidates:
        spec = zoo.zoo_spec(text, progress=progress) if text in zoo.ZOO else parse_candidates(text)[0]
        if spec.name in names:
            raise ValueError(f"candidate {spec.name!r} listed twice")
        names.add(spec.name)
        specs.append(spec)
    return specs


def candidate_record(run: CandidateRun, config: HarnessConfig) -> dict:
    """Per-candidate record of the ranking document (rank and p_best filled in by ``rank_runs``)."""
    v = config.variant
    beta = run.beta_eff.get(v, [])
    rec = {"candidate": run.candidate, "status": run.status, "error": run.error,
           "observed_accuracy": run.val_accuracy[-1] if run.val_accuracy else None,
           "beta_eff": beta, "val_accuracy": run.val_accuracy, "train_loss": run.train_loss, "epoch": run.epoch,
           "beta_numerator": run.beta_numerator.get(v, []), "beta_denominator": run.beta_denominator.get(v, []),
           "beta_eff_variants": run.beta_eff, "wall_time_s": run.wall_time_s, "beta_time_s": run.beta_time_s,
           "train_time_s": run.train_time_s, "feature_dim": run.feature_dim, "n_params": run.n_params,
           "pruning_report": run.pruning,
           "predicted_accuracy": None, "predicted_std": None, "prediction_method": None, "prediction_flags": []}
    if run.status == "ok" and run.val_accuracy:
        try:
            p = predict_final_accuracy(beta, run.val_accuracy, t0=config.t0, denominators=rec["beta_denominator"])
            rec.update(predicted_accuracy=p.accuracy, predicted_std=p.std, prediction_method=p.method,
                       prediction_flags=p.flags)
        except ValueError as exc:
            rec.update(prediction_method="none", prediction_flags=[str(exc)])
    return rec


def rank_runs(records: list[dict], seed: int = 0) -> list[dict]:
    """Fill ``rank`` and ``p_best`` and sort by rank (failed candidates last, p_best 0)."""
    means = np.array([r["predicted_accuracy"] if r["predicted_accuracy"] is not None else np.nan for r in records])
    stds = np.array([r["predicted_std"] if r["predicted_std"] is not None else np.nan for r in records])
    probs = p_best(means, stds, seed=seed)
    ranks = rank_order(means)
    for r, k, pb in zip(records, ranks, probs):
        r["rank"], r["p_best"] = int(k), float(pb)
    return sorted(records, key=lambda r: r["rank"])


def _clean(obj):
    """JSON-safe: NaN/inf → None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def run_ranking(dataset, candidates, config: HarnessConfig, out_dir: Path | None, *,
                completed: dict[str, dict] | None = None,
                on_candidate_done: Callable[[dict], None] | None = None,
                on_epoch: Callable[[str, float, dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                make_plots: bool = True, progress: bool = True) -> dict:
    """Rank ``candidates`` on ``dataset`` (path, or None for the embedded digits). See module docstring.

    ``completed`` maps candidate names to records of a previous interrupted run: they are reused, not
    retrained. ``should_stop()`` is polled between steps and raises ``Cancelled``.
    """
    import torch

    from ncap.models.data import load_dataset, split_dataset

    t0 = time.perf_counter()
    ds = load_dataset(dataset)
    train, val = split_dataset(ds, val_fraction=config.val_fraction, seed=config.seed)
    specs = resolve_candidates(candidates, progress=progress)
    completed = dict(completed or {})
    records = []
    from tqdm.auto import tqdm

    for spec in tqdm(specs, desc="candidates", unit="model", disable=not progress):
        if spec.name in completed and completed[spec.name].get("status") in ("ok", "failed"):
            rec = dict(completed[spec.name])
            rec["reused"] = True
            records.append(rec)
            continue
        try:
            run = fine_tune_candidate(spec, train, val, config, progress=progress, on_epoch=on_epoch,
                                      should_stop=should_stop)
        except Cancelled:
            raise
        except (RuntimeError, ValueError, OSError, KeyError) as exc:  # one broken candidate must not sink the rest
            run = CandidateRun(candidate=spec.name, status="failed", error=f"{type(exc).__name__}: {exc}")
        rec = _clean(candidate_record(run, config))
        records.append(rec)
        if on_candidate_done:
            on_candidate_done(rec)
    records = rank_runs(records, seed=config.seed)
    doc = {"candidates": _clean(records), "config": config.to_dict(),
           "dataset": {"source": ds.source, "n_images": len(ds.y), "n_train": len(train.y),
                       "n_val": len(val.y), "classes": ds.class_names, "image_shape": list(ds.x.shape[1:])},
           "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")) if config.device == "auto" else config.device,
           "wall_time_s": time.perf_counter() - t0, "plots": [], "ncap_version": "0.1.0"}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if make_plots:
            from ncap.service.plots import plot_ranking

            doc["plots"] = plot_ranking(doc, out_dir)
        tmp = out_dir / "ranking.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(out_dir / "ranking.json")
    return doc


def format_table(doc: dict) -> str:
    """Plain-text ranking table for the terminal."""
    rows = [("rank", "candidate", "predicted acc", "P(best)", "last acc", "status")]
    for r in doc["candidates"]:
        pred = "—" if r["predicted_accuracy"] is None else f"{100 * r['predicted_accuracy']:.1f} ± {100 * (r['predicted_std'] or 0):.1f}"
        last = "—" if r["observed_accuracy"] is None else f"{100 * r['observed_accuracy']:.1f}"
        status = r["status"] + (" (reused)" if r.get("reused") else "")
        if r.get("prediction_method") == "fallback_last":
            status += " (fallback: " + "; ".join(r["prediction_flags"]) + ")"
        if r["status"] == "failed":
            status += f": {r['error']}"
        rows.append((str(r["rank"]), r["candidate"], pred, f"{r['p_best']:.2f}", last, status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
