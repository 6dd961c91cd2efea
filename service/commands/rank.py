"""`ncap rank`: rank candidate models on a dataset from the command line (offline, CPU or GPU).

The recipe flags (--epochs, --lr, --probe-width, ...) are generated from ``ncap.models.recipe.Recipe``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncap.service.commands.recipe_flags import add_recipe_flags, recipe_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rank", help="rank candidate models on a dataset by neural capacitance",
        description="Fine-tune each candidate briefly with the capacitance probe, record beta_eff, predict "
        "its final accuracy and rank. With no arguments: the demo zoo on the embedded digits dataset.")
    p.add_argument("--data", default=None, help="dataset: .npz (x, y), ImageFolder directory, .zip of one, or "
                   "a named dataset shipped in an installed package (digits, mnist5k, animal-mnist, elpv); "
                   "default: digits")
    p.add_argument("--candidates", default=None, help="comma-separated: named candidates (`ncap zoo list`: the "
                   "self-pretrained zoo and the ImageNet models mobilenetv2_100.tv_in1k, efficientnet_lite{0,1,2}.in1k), "
                   "timm names (local HF cache), arch=path/to/weights.safetensors|.pth, arch=random, label:...; "
                   "default: the demo zoo")
    p.add_argument("--out", type=Path, default=Path("runs/rank"), help="output directory [default: %(default)s]")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--pareto", action="store_true", help="also print the Pareto view: the candidates no other "
                   "beats on both predicted accuracy and latency, fastest first (pareto.png is always drawn)")
    p.add_argument("--prune-report", type=float, default=None, metavar="SPARSITY", dest="prune_sparsity",
                   help="alias of --prune-sparsity")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--max-memory-gb", type=float, default=None, metavar="GB",
                   help="per-job memory limit: the job's estimated peak memory is checked against it before any "
                   "training (exit 2 when it does not fit) and the process is held to it (RLIMIT_DATA), so a wrong "
                   "estimate fails one candidate with 'out of memory' instead of the host [default: no hard "
                   "limit; the check uses 75%% of physical memory]")
    add_recipe_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ncap.models.data import DataError
    from ncap.service.ranking import format_table, run_ranking

    try:
        config = recipe_from_args(args)
        check_memory(args, config)
        doc = run_ranking(args.data, args.candidates, config, args.out, make_plots=not args.no_plots,
                          progress=not args.quiet)
    except (DataError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"ncap rank: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(doc))
    if args.pareto:
        print("\nPareto view (predicted accuracy against batch-1 latency):\n" + format_table(doc, pareto_only=True))
    print(f"\n{doc.dataset.source}: {doc.dataset.n_train} train / {doc.dataset.n_val} val images, "
          f"{doc.config.epochs} epochs per candidate, {doc.wall_time_s:.0f} s in total.")
    print(f"Wrote {args.out / 'ranking.json'}" + (f" and {', '.join(doc.plots)}" if doc.plots else ""))
    if all(r.status == "failed" for r in doc.candidates):
        print("ncap rank: every candidate failed", file=sys.stderr)
        return 1
    return 0


def check_memory(args: argparse.Namespace, config) -> None:
    """Refuse (``MemoryBudgetError``, a ValueError: exit 2) a job whose estimated peak memory exceeds the limit,
    before any training; with ``--max-memory-gb``, also hold this process to the limit."""
    from ncap.models.memory import GB, apply_memory_limit, check_memory_budget, dataset_shape, default_memory_limit

    if args.max_memory_gb is not None and args.max_memory_gb <= 0:
        raise ValueError(f"--max-memory-gb must be > 0, got {args.max_memory_gb}")
    limit = int(args.max_memory_gb * GB) if args.max_memory_gb else default_memory_limit()
    check_memory_budget(args.candidates, config, dataset_shape(args.data), limit)
    if args.max_memory_gb:
        apply_memory_limit(limit)
