"""Command-line options of the selection benchmark: shared by ``python -m ncap.bench`` and ``ncap bench``.
Light on purpose (no torch): every ``ncap`` command registers these at start-up."""
from __future__ import annotations

import argparse
from pathlib import Path

# The v1 benchmark's probe width and seed, still read by bench/sweep.py (the v1 width sweep).
PROBE_WIDTH = 64
SEED = 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="small version that finishes in <= 5 min on 2 cores")
    ap.add_argument("--rebuild", action="store_true", help="recompute cached runs")
    ap.add_argument("--partial", action="store_true",
                    help="train nothing: report from the runs already cached (tasks with missing runs are left out)")
    ap.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all of the design)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default bench/results/selection or selection-quick)")
    ap.add_argument("--task-resolution", nargs="+", type=task_resolution, default=None, metavar="TASK=PX",
                    help="run these tasks at another resolution than the design's (e.g. elpv-mono=96); their runs are "
                         "cached apart")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates of the intervals")
    ap.add_argument("--no-artefact", action="store_true",
                    help="do not write the fitted combined predictor (bench/results/combined_predictor.json)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared or small machine more threads spin-wait; measured "
                         "here ~10x faster than 2 threads under load)")
    ap.add_argument("--quiet", action="store_true")


def task_resolution(text: str) -> tuple[str, int]:
    """``TASK=PX`` -> (task, px); argparse reports a ValueError as a usage error (exit 2)."""
    task, sep, px = text.partition("=")
    if not sep or not task or not px.isdigit() or not 8 <= int(px) <= 1024:
        raise argparse.ArgumentTypeError(f"expected TASK=PX with 8 <= PX <= 1024, got {text!r}")
    return task, int(px)


def results_name(quick: bool) -> str:
    """Folder under bench/results/: selection or selection-quick."""
    return "selection-quick" if quick else "selection"


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces a run (options at their defaults left out)."""
    parts = ["python -m ncap.bench", *(["--quick"] if args.quick else []), *(["--partial"] if args.partial else [])]
    if args.tasks:
        parts.append("--tasks " + " ".join(args.tasks))
    if args.task_resolution:
        parts.append("--task-resolution " + " ".join(f"{t}={px}" for t, px in args.task_resolution))
    if args.n_boot != 1000:
        parts.append(f"--n-boot {args.n_boot}")
    return " ".join(parts)
