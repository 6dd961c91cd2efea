"""Command-line options of the benchmark and where its results go: shared by ``python -m ncap.bench`` and
``ncap bench``. Light on purpose (no torch): every ``ncap`` command registers these at start-up."""
from __future__ import annotations

import argparse
from pathlib import Path

# The reference recipe's probe width and seed (bench/results/full); other values get their own folder.
PROBE_WIDTH = 64
SEED = 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="small version that finishes in ~5 min on 2 cores")
    ap.add_argument("--rebuild", action="store_true", help="recompute cached runs")
    ap.add_argument("--probe-width", type=int, default=PROBE_WIDTH,
                    help="first hidden width of the probe (halving per layer); the width sweep varies it (default %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="seed of the fine-tunes; a second seed measures the noise ceiling (default %(default)s)")
    ap.add_argument("--max-magnitude-flops", type=float, default=None,
                    help="raise the magnitude variant's work limit (default: the harness's, 2e11); width 128 needs "
                    "~3e11 on 1024-feature backbones")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default bench/results/<full|quick>[-wWIDTH][-sSEED])")
    ap.add_argument("--quiet", action="store_true")


def results_name(quick: bool, probe_width: int = PROBE_WIDTH, seed: int = SEED) -> str:
    """Folder under bench/results/ for one recipe: full, quick, full-w128, full-s1, full-w128-s1, ..."""
    return (("quick" if quick else "full") + (f"-w{probe_width}" if probe_width != PROBE_WIDTH else "")
            + (f"-s{seed}" if seed != SEED else ""))


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces a run (options at their defaults left out)."""
    parts = ["python -m bench", *(["--quick"] if args.quick else [])]
    if args.probe_width != PROBE_WIDTH:
        parts.append(f"--probe-width {args.probe_width}")
    if args.seed != SEED:
        parts.append(f"--seed {args.seed}")
    if args.max_magnitude_flops is not None:
        parts.append(f"--max-magnitude-flops {args.max_magnitude_flops:g}")
    return " ".join(parts)
