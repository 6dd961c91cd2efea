"""Selection benchmark v3, the runs: every (task, candidate, run) of ``bench/design_v3.py``, one after another.

    python -m ncap.bench.selection_v3 run [--tasks elpv-mono,...] [--max-hours 2.5] [--calibration]
    python -m ncap.bench.selection_v3 status

Per (task, candidate): the design's runs (``short``, ``short-dense``, ``seed0``..``seed4``) and ``static``, the
training-free scores (LogME, H-score, LEEP, NCE, the zoo's source accuracy) of its pretrained backbone.
Each finished run is written at once as a small JSON record (the harness's run record plus its task, candidate,
recipe and machine) to ``bench/results/selection-v3/runs/<task>/<candidate>/<run>.json``, which is committed:
a fresh machine resumes from the records without rerunning anything (the activation cache on disk may be lost
between machines; it is rebuilt where a run still needs it). A record whose recipe differs from the design's
(the design changed) is not reused. ``--max-hours`` starts no new run after that many hours.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ncap.bench.design_v3 import (
    CALIBRATION,
    CALIBRATION_TASK,
    CANDIDATES,
    RUN_LABELS,
    TASKS,
    Candidate,
    run_recipe,
)
from ncap.bench.runs import weights_key
from ncap.bench.tasks import TASKS_V3
from ncap.jsonsafe import write_json

RESULTS = Path(__file__).parent / "results" / "selection-v3"
RUNS = RESULTS / "runs"
STATIC = "static"  # the training-free scores' record of a (task, candidate)


def record_path(task: str, candidate: Candidate, label: str) -> Path:
    return RUNS / task / candidate.name.replace("/", "_") / f"{label}.json"


def load_record(task: str, candidate: Candidate, label: str) -> dict | None:
    """The committed record of a run, or None when missing or recorded under another recipe."""
    path = record_path(task, candidate, label)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    recipe = None if label == STATIC else run_recipe(candidate, label).run_dict()
    if doc.get("recipe") != recipe or doc.get("task_key") != TASKS_V3[task].key():
        print(f"  {path.relative_to(RESULTS)}: recorded under another recipe or split; it will be rerun",
              file=sys.stderr)
        return None
    return doc


def machine() -> str:
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _measure(task: str, candidate: Candidate, label: str, spec) -> tuple[dict | None, dict]:
    """(the run's recipe dict or None, what it measured): a fine-tune, or the training-free scores (``static``:
    LogME, H-score, LEEP, NCE of the pretrained backbone's pooled features on the training split at the native
    size, eval transform; the zoo's source-task accuracy)."""
    from ncap.models.recipe import Recipe

    if label == STATIC:
        from ncap.bench.design import Design
        from ncap.bench.runs import BenchRecipe, static_scores

        scores = static_scores(spec, TASKS_V3[task], BenchRecipe(Recipe(image_size=None)))
        return None, {**scores, "source-accuracy": Design.source_accuracy(candidate.entry), "status": "ok"}
    from ncap.models.harness import fine_tune_candidate

    recipe: Recipe = run_recipe(candidate, label)
    train, val = TASKS_V3[task].split()
    return recipe.run_dict(), fine_tune_candidate(spec, train, val, recipe, progress=False).to_dict()


def run_one(task: str, candidate: Candidate, label: str, spec) -> dict:
    """Run one (task, candidate, label) of the design and write its record atomically."""
    recipe, measured = _measure(task, candidate, label, spec)
    doc = {"task": task, "task_key": TASKS_V3[task].key(), "candidate": candidate.name, "entry": candidate.entry,
           "trainable": candidate.trainable, "label": label, "recipe": recipe,
           "weights_key": weights_key(spec), "machine": machine(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
           **measured}
    write_json(record_path(task, candidate, label), doc, default=float)
    return doc


def planned(tasks: list[str], calibration: bool) -> list[tuple[str, Candidate, str]]:
    """Every run of the design in the order they run: task by task, per candidate its short runs, then the truth."""
    plan = [(t, c, label) for t in tasks for c in CANDIDATES for label in (*RUN_LABELS, STATIC)]
    if calibration:
        plan += [(CALIBRATION_TASK, c, "calibration") for c in CALIBRATION]
    return plan


def run(args) -> int:
    from ncap.models.registry import resolve_candidates

    t_start = time.perf_counter()
    todo = [p for p in planned(args.tasks, args.calibration) if load_record(*p) is None]
    print(f"{len(todo)} runs to do", flush=True)
    specs: dict[str, object] = {}
    for i, (task, cand, label) in enumerate(todo):
        if (time.perf_counter() - t_start) / 3600 > args.max_hours:
            print(f"--max-hours {args.max_hours} reached: {len(todo) - i} runs left for the next call", flush=True)
            return 0
        if cand.entry not in specs:
            specs[cand.entry] = resolve_candidates([cand.entry], progress=False)[0]
        t0 = time.perf_counter()
        doc = run_one(task, cand, label, specs[cand.entry])
        acc = doc["val_accuracy"][-1] if doc.get("val_accuracy") else float("nan")
        print(f"[{i + 1}/{len(todo)}] {task} {cand.name} {label}: {doc['status']} acc {acc:.3f} "
              f"({time.perf_counter() - t0:.0f} s, cpu {doc.get('cpu_time_s', float('nan')):.0f} s)", flush=True)
    return 0


def status(args) -> int:
    plan = planned(args.tasks, True)
    done = [p for p in plan if record_path(*p).is_file()]
    print(f"{len(done)} of {len(plan)} runs recorded")
    for task in args.tasks:
        n = sum(1 for p in done if p[0] == task)
        print(f"  {task}: {n} of {sum(1 for p in plan if p[0] == task)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncap.bench.selection_v3", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["run", "status"])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated v3 tasks [default: all, in order]")
    p.add_argument("--max-hours", type=float, default=4.0, help="start no new run after this many hours")
    p.add_argument("--calibration", action="store_true", help="also run the calibration (trainable=all)")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown v3 tasks: {', '.join(unknown)}; known: {', '.join(TASKS)}")
    return run(args) if args.what == "run" else status(args)


if __name__ == "__main__":
    sys.exit(main())
