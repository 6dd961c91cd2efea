"""`ncap bench`: the model-selection benchmark (see bench/__main__.py) and its width sweep (bench/sweep.py)."""
from __future__ import annotations


def _run(a) -> int:
    if a.sweep:
        from bench.sweep import main as sweep_main

        return sweep_main([])
    from bench.__main__ import main as bench_main

    argv = [*(["--quick"] if a.quick else []), *(["--rebuild"] if a.rebuild else []), *(["--quiet"] if a.quiet else []),
            "--probe-width", str(a.probe_width), "--seed", str(a.seed), *(["--out", str(a.out)] if a.out else [])]
    return bench_main(argv)


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run the model-selection benchmark (ncap vs baselines)",
                              description="Rank the zoo on benchmark tasks with every ranker and report Spearman rho, "
                              "weighted tau and top-1 regret against full fine-tunes. Same as `python -m bench`.")
    p.add_argument("--quick", action="store_true", help="small version (~5 min on 2 cores)")
    p.add_argument("--rebuild", action="store_true", help="recompute cached full fine-tunes")
    p.add_argument("--probe-width", type=int, default=64, help="probe's first hidden width (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tunes (default 0)")
    p.add_argument("--out", default=None, help="results folder (default bench/results/full[-wW][-sS] or quick)")
    p.add_argument("--sweep", action="store_true",
                   help="summarise the width sweep and seed replication from existing results (python -m bench.sweep)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)
