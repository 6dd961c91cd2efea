"""`ncap bench`: the model-selection benchmark (bench/__main__.py) and its width sweep (bench/sweep.py)."""
from __future__ import annotations


def _run(args) -> int:
    if args.sweep:
        from ncap.bench.sweep import main as sweep_main

        return sweep_main([])
    from ncap.bench.__main__ import run

    return run(args)


def register(subparsers) -> None:
    from ncap.bench.options import add_arguments

    p = subparsers.add_parser("bench", help="run the model-selection benchmark (ncap vs baselines)",
                              description="Rank the zoo on benchmark tasks with every ranker and report Spearman rho, "
                              "weighted tau and top-1 regret against full fine-tunes. Same as `python -m ncap.bench`.")
    add_arguments(p)
    p.add_argument("--sweep", action="store_true",
                   help="summarise the width sweep and seed replication from existing results (python -m ncap.bench.sweep)")
    p.set_defaults(func=_run)
