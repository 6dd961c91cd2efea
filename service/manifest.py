"""Batch-rank many datasets from one TOML manifest (``ncap rank --manifest FILE.toml``).

The manifest lists datasets, each with its candidates and recipe overrides::

    candidates = ["resnet10t=random", "mobilenetv3_small_050=random"]   # default for every dataset
    [recipe]                                                           # overrides for every dataset
    epochs = 2

    [[datasets]]
    name = "digits"              # output folder under --out (default: the data's file stem)
    data = "digits"              # a named dataset, .npz, ImageFolder directory or .zip (relative to the file)

    [[datasets]]
    data = "shapes.npz"
    candidates = ["resnet10t=random"]
    recipe = { epochs = 1, image_size = 24 }

The recipe of a dataset is the command line's recipe, updated by the file's ``[recipe]``, then by the
dataset's ``recipe`` (validated by :class:`~ncap.models.recipe.Recipe`). Each dataset gets its own folder
``<out>/<name>/`` with ``ranking.json`` and, written the moment each candidate finishes,
``candidates/<candidate>.json``; rerunning the same manifest reuses those records (a finished pair is never
trained again) unless the dataset's data or recipe changed (``entry.json`` records both). ``<out>/summary.md``
and ``summary.json`` hold one row per dataset. With the Ray executor every (dataset, candidate) pair is
submitted at once; with the local one the datasets run one after another.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ncap.jsonsafe import to_jsonable, write_json
from ncap.models.recipe import Recipe

__all__ = ["ManifestEntry", "finished_records", "load_manifest", "run_fingerprint", "run_manifest", "save_record",
           "summary_markdown"]
log = logging.getLogger("ncap.manifest")
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
Candidates = list[str] | str | None
_WRITE_LOCK = threading.Lock()


class _DatasetTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    data: str = Field(min_length=1)
    candidates: Candidates = None
    recipe: dict[str, Any] = Field(default_factory=dict)


class _ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: Candidates = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    datasets: list[_DatasetTable] = Field(min_length=1)


@dataclass(frozen=True)
class ManifestEntry:
    """One dataset of a manifest, resolved: its output folder name, data, candidates and recipe."""

    name: str
    data: str
    candidates: Candidates
    config: Recipe

    def fingerprint(self) -> dict:
        """What a finished record depends on (a change retrains the dataset's candidates)."""
        return run_fingerprint(self.data, self.config)


def run_fingerprint(data, config: Recipe) -> dict:
    """What a finished candidate record depends on: the data (:func:`ncap.models.data.data_fingerprint`: a
    changed file is other data), every recipe field that changes training (not the post-hoc ranking rule) and,
    when not the default, the allocation (a candidate stopped by successive halving is not a finished one)."""
    from ncap.models.data import data_fingerprint

    return {"data": data_fingerprint(data), "recipe": config.run_dict(), **(
        {"allocation": allocation} if (allocation := config.allocation_dict()) else {})}


def _fields(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in e['loc']) or '(file)'}: "
                     f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


def load_manifest(path: Path, base: Recipe) -> list[ManifestEntry]:
    """Parse and check a manifest (see the module docstring); ``ValueError`` naming the entry and field."""
    from ncap.models.archive import DataError
    from ncap.models.candidates import CandidateError
    from ncap.models.memory import dataset_shape
    from ncap.models.registry import check_candidates

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        manifest = _ManifestFile.model_validate(raw)
    except OSError as exc:
        raise ValueError(f"manifest {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"manifest {path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"manifest {path}: {_fields(exc)}") from None
    entries: list[ManifestEntry] = []
    for i, table in enumerate(manifest.datasets):
        where = f"manifest {path}: datasets[{i}]"
        data = _resolve_data(table.data, path.parent)
        name = table.name or _SAFE.sub("_", Path(table.data).stem)
        if name in {e.name for e in entries}:
            raise ValueError(f"{where}: name: {name!r} is used twice (set distinct 'name's)")
        try:
            config = Recipe.model_validate({**base.model_dump(), **manifest.recipe, **table.recipe})
        except ValidationError as exc:
            raise ValueError(f"{where} ({name}): {_fields(exc, prefix='recipe.')}") from None
        candidates = table.candidates if table.candidates is not None else manifest.candidates
        try:
            check_candidates(candidates)
            dataset_shape(data)
        except CandidateError as exc:
            raise ValueError(f"{where} ({name}): candidates: {exc}") from None
        except DataError as exc:
            raise ValueError(f"{where} ({name}): data: {exc}") from None
        entries.append(ManifestEntry(name, data, candidates, config))
    return entries


def _resolve_data(data: str, base: Path) -> str:
    """A named dataset stays a name; a relative path is taken relative to the manifest's folder."""
    from ncap.models.named_datasets import NAMED

    if data in NAMED and not (base / data).exists():
        return data
    return str((base / Path(data).expanduser()).resolve())


# ----------------------------------------------------------------------------------- finished records
def _record_path(folder: Path, candidate: str) -> Path:
    digest = hashlib.sha1(candidate.encode()).hexdigest()[:8]  # names differing only in odd characters
    return folder / "candidates" / f"{_SAFE.sub('_', candidate)[:80]}-{digest}.json"


def save_record(folder: Path, record) -> None:
    """Write one finished candidate's record atomically (``candidates/<name>-<hash>.json``)."""
    data = to_jsonable(record)
    write_json(_record_path(folder, data["candidate"]), data)


def finished_records(folder: Path, fingerprint: dict, reuse: bool = True) -> dict[str, dict]:
    """Records finished by earlier runs into ``folder`` with the same ``fingerprint`` (:func:`run_fingerprint`:
    same data and recipe), by candidate name; otherwise none (their files are removed, so other data or
    another recipe is never mixed in), and ``entry.json`` is rewritten for this run. ``reuse=False`` removes
    them whatever their fingerprint (``ncap rank --restart``)."""
    marker = folder / "entry.json"
    try:
        same = reuse and marker.is_file() and json.loads(marker.read_text()) == fingerprint
    except ValueError:  # a torn marker: start over
        same = False
    records: dict[str, dict] = {}
    for file in sorted((folder / "candidates").glob("*.json")):
        if not same:
            file.unlink()
            continue
        try:
            rec = json.loads(file.read_text())
            records[rec["candidate"]] = rec
        except (ValueError, KeyError, TypeError):  # a torn or foreign file: train that candidate again
            log.warning("ignoring unreadable record %s", file)
    if not same:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(marker, fingerprint)
    return records


# ------------------------------------------------------------------------------------------- running
def rank_entry(entry: ManifestEntry, out_root: Path, executor, *, make_plots: bool, progress: bool,
               report=print) -> dict:
    """Rank one dataset of a manifest into ``out_root/<name>``, reusing its finished records; returns its
    summary row (``error`` set when the dataset as a whole failed)."""
    from ncap.service.ranking import run_ranking, write_document

    folder = Path(out_root) / entry.name
    completed = finished_records(folder, entry.fingerprint())

    def done(record) -> None:
        save_record(folder, record)
        report(f"{entry.name}: {record.candidate} {record.status}")

    row: dict[str, Any] = {"dataset": entry.name, "data": entry.data, "folder": entry.name, "error": None}
    try:
        doc = run_ranking(entry.data, entry.candidates, entry.config, None, completed=completed,
                          on_candidate_done=done, progress=progress, executor=executor)
        with _WRITE_LOCK:  # pyplot is not thread-safe
            write_document(doc, folder, make_plots=make_plots)
    except Exception as exc:  # one dataset's failure (its data, its candidates) must not stop the others
        from ncap.models.memory import candidate_failure

        log.exception("dataset %s failed", entry.name)
        return {**row, "error": candidate_failure(exc)}
    best = doc.candidates[0]
    ok = best.status == "ok"
    return {**row, "candidates": len(doc.candidates), "failed": sum(r.status == "failed" for r in doc.candidates),
            "reused": sum(r.reused for r in doc.candidates), "best": best.candidate if ok else None,
            "ranked_by": entry.config.ranker, "score": best.score if ok else None,
            "predicted_accuracy": best.predicted_accuracy if ok else None, "p_best": best.p_best if ok else None,
            "wall_time_s": round(doc.wall_time_s, 2)}


def run_manifest(entries: list[ManifestEntry], out_root: Path, executor, *, make_plots: bool = True,
                 progress: bool = True, report=print) -> list[dict]:
    """Rank every entry (concurrently on Ray: every pair is submitted at once; one after another locally),
    then write ``summary.json`` and ``summary.md`` into ``out_root``. Returns the summary rows."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    parallel = getattr(executor, "name", "local") == "ray"
    if parallel:
        executor.connect()  # once, before the threads share it
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            report(line)

    with ThreadPoolExecutor(max_workers=len(entries) if parallel else 1, thread_name_prefix="ncap-manifest") as pool:
        rows = list(pool.map(lambda e: rank_entry(e, out_root, executor, make_plots=make_plots,
                                                  progress=progress and not parallel, report=say), entries))
    (out_root / "summary.json").write_text(json.dumps(to_jsonable(rows), indent=2))
    (out_root / "summary.md").write_text(summary_markdown(rows))
    return rows


def summary_markdown(rows: list[dict]) -> str:
    """The summary rows as a Markdown table (one line per dataset)."""
    head = ("| dataset | best candidate | ranked by | score | predicted acc | P(best) | candidates | failed | reused "
            "| time (s) | status |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['dataset']} |" + " — |" * 9 + f" error: {r['error']} |")
            continue
        acc = "—" if r["predicted_accuracy"] is None else f"{100 * r['predicted_accuracy']:.1f}"
        pb = "—" if r["p_best"] is None else f"{r['p_best']:.2f}"
        score = "—" if r["score"] is None else f"{r['score']:.4g}"
        lines.append(f"| {r['dataset']} | {r['best'] or '—'} | {r['ranked_by']} | {score} | {acc} | {pb} | "
                     f"{r['candidates']} | {r['failed']} | "
                     f"{r['reused']} | {r['wall_time_s']:.0f} | ok |")
    return "\n".join(lines) + "\n"
