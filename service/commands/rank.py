"""`ncap rank`: rank candidate models on a dataset from the command line (offline, CPU or GPU).

The recipe flags (--epochs, --lr, --probe-width, ...) are generated from ``ncap.models.recipe.Recipe``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncap.service.commands.recipe_flags import add_recipe_flags, recipe_from_args
from ncap.service.executors import DEFAULT_MAX_RETRIES, EXECUTORS, make_executor


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rank", help="rank candidate models on a dataset by neural capacitance",
        description="Fine-tune each candidate briefly with the capacitance probe, record beta_eff, predict "
        "its final accuracy and rank. With no arguments: the demo zoo on the embedded digits dataset. Rerunning "
        "with the same --out, data and recipe reuses the candidates an earlier (interrupted) run finished.",
        epilog="exit status: 0 ranked (some candidates may have failed: see the table), 1 every candidate "
        "failed, 2 bad input (nothing trained; the reason on stderr), 130 interrupted (finished candidates are "
        "kept in --out and reused by the next run)")
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
                   "beats on both the ranking score (--ranker) and batch-1 latency, fastest first (pareto.png is "
                   "always drawn)")
    p.add_argument("--prune-report", type=float, default=None, metavar="SPARSITY", dest="prune_sparsity",
                   help="alias of --prune-sparsity")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the ranking document (ranking.json) on stdout; the "
                   "table, progress and messages go to stderr")
    p.add_argument("--keep", type=int, default=1, metavar="K", help="keep the fine-tuned models of the top K "
                   "candidates in OUT/checkpoints (safetensors: backbone.* with timm's keys, probe.*; 0 keeps none; "
                   "the disk's free space is checked before each is written) [default: %(default)s]")
    p.add_argument("--restart", action="store_true", help="retrain every candidate, even those an earlier run "
                   "into --out finished with the same data and recipe (by default they are reused)")
    p.add_argument("--max-memory-gb", type=float, default=None, metavar="GB",
                   help="per-job memory limit: the job's estimated peak memory is checked against it before any "
                   "training (exit 2 when it does not fit) and the process is held to it (RLIMIT_DATA), so a wrong "
                   "estimate fails one candidate with 'out of memory' instead of the host [default: no hard "
                   "limit; the check refuses what exceeds the machine's physical memory and warns above the memory "
                   "available now]")
    add_executor_flags(p)
    add_recipe_flags(p)
    p.set_defaults(func=run)


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """--executor, the Ray options and --manifest (see docs/ray.md)."""
    g = p.add_argument_group("scale-out (docs/ray.md)")
    g.add_argument("--executor", choices=EXECUTORS, default="local", help="where the fine-tunes run: 'local' "
                   "one after another in this process, 'ray' each candidate as one Ray task [default: %(default)s]")
    g.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT", help="Ray cluster to join ('auto': "
                   "the cluster this machine belongs to); default: start a private local Ray on 127.0.0.1")
    g.add_argument("--cpus-per-candidate", type=float, default=None, metavar="C",
                   help="Ray CPUs per candidate task (fractions allowed) [default: 1]")
    g.add_argument("--gpus-per-candidate", type=float, default=None, metavar="G",
                   help="Ray GPUs per candidate task (fractions allowed, e.g. 0.25) [default: 0]")
    g.add_argument("--max-retries", type=int, default=None, metavar="N", help="times a candidate whose Ray "
                   f"worker or node died is run again [default: {DEFAULT_MAX_RETRIES}]")
    g.add_argument("--manifest", type=Path, default=None, metavar="FILE.toml", help="batch-rank the datasets "
                   "listed in FILE.toml into one folder each under --out, plus summary.md/json; rerunning "
                   "resumes (finished pairs are skipped). Excludes --data and --candidates")


def executor_from_args(args: argparse.Namespace):
    """The executor the flags ask for; ``ValueError`` for Ray options without ``--executor ray``."""
    ray_options = {"address": args.ray_address, "num_cpus": args.cpus_per_candidate,
                   "num_gpus": args.gpus_per_candidate, "max_retries": args.max_retries}
    given = {k: v for k, v in ray_options.items() if v is not None}
    if args.executor != "ray" and given:
        flags = ", ".join(f"--{f}" for f, k in (("ray-address", "address"), ("cpus-per-candidate", "num_cpus"),
                                                ("gpus-per-candidate", "num_gpus"), ("max-retries", "max_retries"))
                          if k in given)
        raise ValueError(f"{flags} need(s) --executor ray")
    return make_executor(args.executor, **given)


def run(args: argparse.Namespace) -> int:
    from ncap.models.data import DataError
    from ncap.service.manifest import save_record
    from ncap.service.ranking import format_table, run_ranking
    from ncap.service.tables import allocation_summary

    try:
        config = recipe_from_args(args)
        executor = executor_from_args(args)
        if args.keep < 0:
            raise ValueError(f"--keep must be 0 or more, got {args.keep}")
        if args.manifest is not None:
            return run_manifest_command(args, config, executor)
        check_inputs(args)
        if config.beta_eff_shortfall and config.track_beta:  # the ranking rule does not need it: a warning
            print(f"ncap rank: warning: β_eff's prediction {config.beta_eff_shortfall}; it will be reported as a "
                  "flagged fallback (the last accuracy)", file=sys.stderr)
        if config.trains_in_turns and args.executor != "local":
            raise ValueError("--strategy halving and --time-budget train the candidates in turns in this process: "
                             "use --executor local")
        check_memory(args, config)
        check_run_estimate(args, config)
        completed = {} if config.trains_in_turns else resumable(args, config)
        with executor:
            doc = run_ranking(args.data, args.candidates, config, args.out, make_plots=not args.no_plots,
                              progress=not args.quiet, executor=executor, completed=completed,
                              on_candidate_done=lambda record: save_record(args.out, record), keep=args.keep)
    except (DataError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"ncap rank: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(doc.to_json())
    print(format_table(doc), file=out)
    if args.pareto:
        print(f"\nPareto view (ranking score, {doc.config.ranker}, against batch-1 latency):\n"
              + format_table(doc, pareto_only=True), file=out)
    print(f"\n{doc.dataset.source}: {doc.dataset.n_train} train / {doc.dataset.n_val} val images, "
          f"{doc.config.epochs} epochs per candidate, {doc.wall_time_s:.0f} s in total.", file=out)
    if doc.allocation:
        print(allocation_summary(doc), file=out)
    print(f"Wrote {args.out / 'ranking.json'}" + (f" and {', '.join(doc.plots)}" if doc.plots else ""), file=out)
    for r in doc.candidates:
        if r.checkpoint or r.checkpoint_error:
            print(f"Kept #{r.rank} {r.candidate}: {args.out / r.checkpoint} ({r.checkpoint_bytes / 1e6:.1f} MB)"
                  if r.checkpoint else f"Not kept: {r.candidate}: {r.checkpoint_error}", file=out)
    if all(r.status == "failed" for r in doc.candidates):
        print("ncap rank: every candidate failed", file=sys.stderr)
        return 1
    return 0


def resumable(args: argparse.Namespace, config) -> dict[str, dict]:
    """The candidate records an earlier run into ``--out`` finished with the same data and recipe (none with
    ``--restart``, or when either changed: those records are removed, never mixed in); says what it reuses."""
    from ncap.service.manifest import finished_records, run_fingerprint

    completed = finished_records(args.out, run_fingerprint(args.data, config), reuse=not args.restart)
    if completed:
        print(f"ncap rank: reusing {len(completed)} candidates finished by an earlier run in {args.out} (same data "
              f"and recipe): {', '.join(completed)}; --restart retrains them", file=sys.stderr)
    return completed


def run_manifest_command(args: argparse.Namespace, config, executor) -> int:
    """``ncap rank --manifest``: check the whole manifest first (``ValueError``: exit 2), then rank every
    dataset; exit 1 when a dataset failed or none of its candidates succeeded."""
    from ncap.service.manifest import load_manifest, run_manifest, summary_markdown

    if args.data is not None or args.candidates is not None:
        raise ValueError("--manifest lists the datasets and candidates: drop --data/--candidates")
    entries = load_manifest(args.manifest, config)
    for entry in entries:
        check_memory(argparse.Namespace(max_memory_gb=None, candidates=entry.candidates, data=entry.data),
                     entry.config)
    if args.max_memory_gb is not None:
        check_memory(args, config)
    with executor:
        rows = run_manifest(entries, args.out, executor, make_plots=not args.no_plots, progress=not args.quiet)
    print("\n" + summary_markdown(rows) + f"\nWrote {args.out / 'summary.md'} and one folder per dataset.")
    return 0 if all(r["error"] is None and r["best"] for r in rows) else 1


def check_inputs(args: argparse.Namespace) -> None:
    """The data source and the candidate entries, each with the loader's and the registry's own message, before
    the pre-checks that read them (``DataError``/``CandidateError``, ValueErrors: exit 2)."""
    from pathlib import Path

    from ncap.models.data import NAMED_DATASETS, missing_dataset_error
    from ncap.models.registry import check_candidates

    data = args.data
    if data is not None and not (data in NAMED_DATASETS or Path(data).expanduser().exists()):
        raise missing_dataset_error(data)
    check_candidates(args.candidates, require_local_weights=True)


def check_memory(args: argparse.Namespace, config) -> None:
    """Refuse (``MemoryBudgetError``, a ValueError: exit 2) a job whose estimated peak memory exceeds the limit,
    before any training; with ``--max-memory-gb``, also hold this process to the limit."""
    from ncap.models.memory import (
        GB,
        apply_memory_limit,
        available_memory,
        check_memory_budget,
        dataset_shape,
        default_memory_limit,
        format_bytes,
    )

    if args.max_memory_gb is not None and args.max_memory_gb <= 0:
        raise ValueError(f"--max-memory-gb must be > 0, got {args.max_memory_gb}")
    limit = int(args.max_memory_gb * GB) if args.max_memory_gb else default_memory_limit(fraction=1.0)
    est = check_memory_budget(args.candidates, config, dataset_shape(args.data), limit)
    if args.max_memory_gb:
        apply_memory_limit(limit)
    elif est.total > (available := available_memory()):
        print(f"ncap rank: warning: estimated peak memory {est.describe()} for candidate {est.candidate!r} exceeds "
              f"the {format_bytes(available)} available now; it may be killed if other processes keep "
              f"their memory", file=sys.stderr)


def check_run_estimate(args: argparse.Namespace, config) -> None:
    """Print the run's estimated compute time (and activation cache size) before training (stderr); refuse
    (``ValueError``: exit 2) a run whose largest activation cache entry exceeds ``--activation-cache-gb``."""
    from ncap.models.memory import GB, dataset_shape
    from ncap.models.run_estimate import estimate_run

    est = estimate_run(args.candidates, config, dataset_shape(args.data))
    print(f"ncap rank: {est.describe()}", file=sys.stderr)
    bound = config.activation_cache_gb * GB
    if est.largest_entry_bytes > bound:
        raise ValueError(f"a candidate's activation cache needs ~{est.largest_entry_bytes / GB:.2f} GB, more than "
                         f"--activation-cache-gb {config.activation_cache_gb:g}; raise it or lower --cached-views")
