"""`ncap finetune`: continue a candidate that `ncap rank --keep` kept to a full fine-tune (service/finetune.py)."""
from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="continue a kept candidate of a ranking to a full fine-tune",
        description="Train the kept model of a ranking's candidate further, with the ranking's recipe, data and "
        "split: backbone and probe start from the kept weights, under a new warm-up + cosine schedule over "
        "--epochs (the optimiser's state is not kept). Prints the final validation accuracy next to what the "
        "ranking predicted, and writes the model.",
        epilog="exit status: 0 done, 2 bad input (no ranking.json, a candidate that was not kept, other data)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out folder of an `ncap rank` run")
    p.add_argument("--candidate", default="best", help="a candidate's name, or 'best' [default: %(default)s]")
    p.add_argument("--epochs", type=int, default=10, help="epochs to continue for [default: %(default)s]")
    p.add_argument("--data", default=None, help="the ranking's data, if its recorded source moved")
    p.add_argument("--out", type=Path, default=None, help="where finetuned.safetensors goes [default: RUN_DIR/finetuned]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ncap.models.data import DataError
    from ncap.service.finetune import finetune

    if args.epochs < 1:
        print(f"ncap finetune: error: --epochs must be at least 1, got {args.epochs}", file=sys.stderr)
        return 2
    try:
        res = finetune(args.run_dir, args.candidate, args.epochs, data=args.data, out_dir=args.out,
                       progress=not args.quiet)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"ncap finetune: error: {exc}", file=sys.stderr)
        return 2
    pct = lambda v: "—" if v is None else f"{100 * v:.1f} %"
    print(f"{res.candidate}: {res.epochs} more epochs, last validation accuracy {pct(res.val_accuracy)} "
          f"(the ranking predicted {pct(res.predicted_accuracy)} ± {pct(res.predicted_std)} and observed "
          f"{pct(res.ranking_observed_accuracy)} after its short run)")
    if res.checkpoint is not None:
        print(f"Wrote {res.checkpoint}")
    return 0
