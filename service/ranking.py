"""A ranking job end to end: dataset → harness per candidate → predictions → ranking document.

The same function backs ``ncap rank``, ``ncap.rank`` and the web service. The document is typed
(:class:`ncap.service.documents.RankingDocument`) and written as ``ranking.json``.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ncap.capacitance.ranking_rules import DEFAULT_RULE, rank_scores, score_run
from ncap.jsonsafe import write_json
from ncap.models.harness import Cancelled, CandidateRun, fine_tune_candidate, resolve_device
from ncap.models.memory import candidate_failure
from ncap.models.partial import split_problem
from ncap.models.recipe import Recipe
from ncap.models.registry import resolve_candidates
from ncap.service.documents import CandidateRecord, DatasetInfo, RankingDocument
from ncap.service.executors import Executor, Hooks, LocalExecutor, load_training_data
from ncap.service.tables import format_table, html_table, table_rows  # noqa: F401 - ranking.format_table stays

__all__ = ["Cancelled", "failed_record", "format_table", "rank_runs", "run_ranking", "write_document"]
log = logging.getLogger("ncap.ranking")


def candidate_record(run: CandidateRun, config: Recipe) -> CandidateRecord:
    """Per-candidate record of the ranking document (rank and p_best filled in by ``rank_runs``)."""
    v = config.variant
    rec = CandidateRecord(
        candidate=run.candidate, status=run.status, error=run.error,
        observed_accuracy=run.val_accuracy[-1] if run.val_accuracy else None,
        beta_eff=run.beta_eff.get(v, []), val_accuracy=run.val_accuracy, train_loss=run.train_loss,
        epoch=run.epoch, beta_numerator=run.beta_numerator.get(v, []), beta_denominator=run.beta_denominator.get(v, []),
        beta_eff_variants=run.beta_eff, wall_time_s=run.wall_time_s, beta_time_s=run.beta_time_s,
        train_time_s=run.train_time_s, feature_dim=run.feature_dim, n_params=run.n_params,
        latency_ms=run.latency_ms, weights_remap=run.weights_remap, pruning_report=run.pruning,
        checkpoint_bytes=run.checkpoint_bytes, checkpoint_error=run.checkpoint_error)
    if run.status == "ok" and run.val_accuracy:
        try:
            p = score_run("beta_eff", beta_eff=rec.beta_eff, val_accuracy=rec.val_accuracy, train_loss=rec.train_loss,
                          beta_denominator=rec.beta_denominator, t0=config.t0)
            rec = rec.model_copy(update={"predicted_accuracy": p.score, "predicted_std": p.std,
                                         "prediction_method": p.method, "prediction_flags": list(p.flags)})
        except ValueError as exc:
            rec = rec.model_copy(update={"prediction_method": "none", "prediction_flags": [str(exc)]})
    return rec


def rule_score(rec: CandidateRecord, ranker: str, t0: int, n_val: int | None) -> tuple[float, float]:
    """(score, std) of one record under the ranking rule ``ranker`` (NaN, NaN for a failed or unscorable one:
    a run the rule refuses, e.g. malformed β_eff, whose reason the record's ``prediction_flags`` already hold)."""
    if rec.status != "ok" or not rec.val_accuracy:
        return np.nan, np.nan
    try:
        s = score_run(ranker, beta_eff=rec.beta_eff, val_accuracy=rec.val_accuracy, train_loss=rec.train_loss,
                      beta_denominator=rec.beta_denominator, n_val=n_val, t0=t0)
    except ValueError:
        return np.nan, np.nan
    return s.score, s.std


def rank_runs(records: list[CandidateRecord], seed: int = 0, ranker: str = DEFAULT_RULE, t0: int = 1,
              n_val: int | None = None) -> list[CandidateRecord]:
    """Fill ``score`` (under the ranking rule ``ranker``, ``capacitance/ranking_rules.py``), ``rank`` and
    ``p_best`` (:func:`~ncap.capacitance.ranking_rules.rank_scores`: None where the rule has no std) and sort
    by rank (failed candidates last)."""
    scored = np.array([rule_score(r, ranker, t0, n_val) for r in records], dtype=float).reshape(-1, 2)
    means, stds = scored[:, 0], scored[:, 1]
    ranks, probs = rank_scores(means, stds, seed=seed)
    ranked = [r.model_copy(update={"rank": int(k), "score": float(m) if np.isfinite(m) else None,
                                   "score_std": float(sd) if np.isfinite(sd) else None,
                                   "p_best": float(pb) if np.isfinite(pb) else None})
              for r, k, m, sd, pb in zip(records, ranks, means, stds, probs)]
    return sorted(ranked, key=lambda r: r.rank)


def pareto_front(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Boolean mask (n,) of the points no other point dominates: at least as accurate and at least as fast,
    and strictly better in one. NaN in either coordinate is never on the front.

    Parameters
    ----------
    accuracy, latency : (n,) arrays; higher accuracy and lower latency are better.
    """
    acc, lat = np.asarray(accuracy, float), np.asarray(latency, float)
    ok = np.isfinite(acc) & np.isfinite(lat)
    ge = (acc[None, :] >= acc[:, None]) & (lat[None, :] <= lat[:, None])  # ge[i, j]: j is as good as i
    gt = (acc[None, :] > acc[:, None]) | (lat[None, :] < lat[:, None])
    dominated = (ge & gt & ok[None, :]).any(axis=1)
    return ok & ~dominated


def mark_pareto(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """Set ``pareto`` on each record from its ranking score (the front does not change under a monotone
    transform, so any rule's score works) and batch-1 latency."""
    acc = np.array([np.nan if r.score is None else r.score for r in records])
    lat = np.array([r.latency_ms.get(1, np.nan) for r in records])
    return [r.model_copy(update={"pareto": bool(f)}) for r, f in zip(records, pareto_front(acc, lat))]


def failed_record(name: str, error: str, config: Recipe) -> CandidateRecord:
    """The record of a candidate that failed with the one-line reason ``error``."""
    return candidate_record(CandidateRun(candidate=name, status="failed", error=error), config)


CHECKPOINTS = "checkpoints"  # the kept models' folder, next to ranking.json


def checkpoint_name(candidate: str) -> str:
    """File name of a candidate's kept model: its name made file-safe, plus a hash against collisions."""
    import hashlib
    import re

    digest = hashlib.sha1(candidate.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._=+-]+', '_', candidate)[:80]}-{digest}.safetensors"


def _train_one(spec, train, val, config: Recipe, checkpoint_dir: Path | None = None, **hooks) -> CandidateRecord:
    try:
        checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / checkpoint_name(spec.name)
        run = fine_tune_candidate(spec, train, val, config, checkpoint=checkpoint, **hooks)
    except Cancelled:
        raise
    except Exception as exc:  # any failure of one candidate fails that candidate only; the traceback goes to the log
        log.exception("candidate %s failed", spec.name)
        return failed_record(spec.name, candidate_failure(exc), config)
    return candidate_record(run, config)


def run_ranking(dataset, candidates, config: Recipe, out_dir: Path | None, *,
                completed: dict[str, dict] | None = None,
                on_candidate_start: Callable[[str], None] | None = None,
                on_candidate_done: Callable[[CandidateRecord], None] | None = None,
                on_epoch: Callable[[str, float, dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                make_plots: bool = True, progress: bool = True, executor: Executor | None = None,
                keep: int = 0) -> RankingDocument:
    """Rank ``candidates`` on ``dataset`` (path or named dataset; None = the embedded digits).

    ``completed`` maps candidate names to records of a previous interrupted run: they are reused, not
    retrained. ``should_stop()`` is polled between steps and raises ``Cancelled``. ``executor`` runs the
    fine-tunes (default :class:`~ncap.service.executors.LocalExecutor`: one after another in this process;
    a :class:`~ncap.service.executors.RayExecutor` runs them as Ray tasks); hooks are called the same way.
    ``keep``: the fine-tuned models of the top ``keep`` candidates are kept in ``out_dir/checkpoints`` (every
    candidate's is written as it finishes, the others are removed once the ranking is known).
    """
    t0, started = time.perf_counter(), time.monotonic()
    ds, data = load_training_data(dataset, config)
    specs = resolve_candidates(candidates, progress=progress, require_local_weights=True)
    hooks = Hooks(on_candidate_start, on_epoch, on_candidate_done, should_stop, progress)
    folder = None if out_dir is None else Path(out_dir) / CHECKPOINTS
    if config.trains_in_turns:
        records, config, allocation = _train_in_rounds(specs, data, ds, candidates, config, hooks, started,
                                                       folder if keep > 0 else None, bool(completed), executor)
    else:
        records, allocation = _train_each(specs, data, config, hooks, folder if keep > 0 else None, completed,
                                          executor), None
    warnings = allocation.pop("warnings", []) if allocation else []
    doc = RankingDocument(
        candidates=mark_pareto(records), config=config, allocation=allocation, warnings=warnings,
        dataset=DatasetInfo(source=ds.source, n_images=len(ds.y), n_train=len(data.train.y), n_val=len(data.val.y),
                            classes=ds.class_names, image_shape=list(ds.x.shape[1:])),
        device=str(resolve_device(config.device)), wall_time_s=time.perf_counter() - t0)
    if folder is not None:
        keep_top(doc, folder, keep)  # keep=0 removes what an earlier run into out_dir kept
    if out_dir is not None:
        write_document(doc, Path(out_dir), make_plots=make_plots)
    return doc


def _refused(specs, config: Recipe) -> dict[str, CandidateRecord]:
    """The failed records of the candidates that cannot be split as ``config.trainable`` asks, by name."""
    return {s.name: failed_record(s.name, problem, config) for s in specs
            if (problem := split_problem(s, config.trainable, config.image_size))}


def _train_each(specs, data, config: Recipe, hooks: Hooks, folder: Path | None, completed: dict | None,
                executor: Executor | None) -> list[CandidateRecord]:
    """Every candidate for ``config.epochs`` (the executor's way), reusing ``completed`` records; ranked."""
    completed = {k: CandidateRecord.model_validate(v) for k, v in (completed or {}).items()}
    reused = {s.name: completed[s.name].model_copy(update={"reused": True}) for s in specs
              if s.name in completed and completed[s.name].status in ("ok", "failed")}
    refused = _refused([s for s in specs if s.name not in reused], config)
    train = functools.partial(_train_one, checkpoint_dir=folder) if folder is not None else _train_one
    trained = (executor or LocalExecutor()).run([s for s in specs if s.name not in reused and s.name not in refused],
                                                data, config, hooks, train=train, fail=failed_record)
    records = [reused.get(s.name) or refused.get(s.name) or trained[s.name] for s in specs]
    return rank_runs(records, seed=config.seed, ranker=config.ranker, t0=config.t0, n_val=len(data.val.y))


def _train_in_rounds(specs, data, ds, candidates, config: Recipe, hooks: Hooks, started: float, folder: Path | None,
                     resumed: bool, executor: Executor | None) -> tuple[list[CandidateRecord], Recipe, dict]:
    """Successive halving or a time budget (:mod:`ncap.service.rounds`): (ranked records, the recipe with its
    planned epochs, the allocation's record for the document)."""
    from ncap.service.rounds import BUDGET_RESERVE, plan_budget, rank_by_rounds, run_in_rounds

    allocation: dict = {"strategy": config.strategy, "warnings": []}
    if resumed:
        allocation["warnings"].append("a run with successive halving or a time budget starts over: the records "
                                      "of the interrupted attempt were not reused")
    if executor is not None and not isinstance(executor, LocalExecutor):
        allocation["warnings"].append("successive halving and time budgets train in this process, not on Ray")
    deadline = None
    if config.time_budget_s is not None:
        config, plan = plan_budget(config, candidates, ds)
        allocation.update(plan)
        deadline = started + config.time_budget_s * (1 - BUDGET_RESERVE)
    refused = _refused(specs, config)
    records, result = run_in_rounds([s for s in specs if s.name not in refused], data, config, hooks,
                                    checkpoint_path=lambda name: folder and folder / checkpoint_name(name),
                                    make_record=candidate_record, fail_record=failed_record,
                                    deadline=deadline)
    allocation.update(result.to_dict(), training_s=round(time.monotonic() - started, 1))
    return rank_by_rounds(records + list(refused.values()), result), config, allocation


def keep_top(doc: RankingDocument, folder: Path, keep: int) -> None:
    """Keep the models of the ``keep`` best-ranked candidates that succeeded (recorded in their records as
    ``checkpoints/<file>``); remove every other model file in ``folder``."""
    ranked = sorted((r for r in doc.candidates if r.status == "ok"), key=lambda r: r.rank)
    kept = {checkpoint_name(r.candidate): r for r in ranked[:keep]}
    for file in folder.glob("*.safetensors") if folder.is_dir() else []:
        if file.name in kept:
            record = kept[file.name]
            record.checkpoint, record.checkpoint_bytes = f"{CHECKPOINTS}/{file.name}", file.stat().st_size
        else:
            file.unlink()


def write_document(doc: RankingDocument, out_dir: Path, make_plots: bool = True) -> None:
    """``ranking.json`` (atomically) and, if asked, the plots, into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if make_plots:
        from ncap.service.plots import plot_ranking

        try:
            doc.plots = plot_ranking(doc, out_dir)
        except Exception as exc:  # a plot is an extra: the ranking stands without it
            log.warning("plots not drawn: %s", exc, exc_info=True)
            doc.plots = []
            doc.warnings.append(f"plots not drawn: {type(exc).__name__}: {exc}"[:300])
    write_json(out_dir / "ranking.json", doc.to_json())


