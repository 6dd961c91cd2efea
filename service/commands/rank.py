"""`ncap rank`: rank candidate models on a dataset from the command line (offline, CPU or GPU)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ncap.models.harness import HarnessConfig


def register(subparsers) -> None:
    d = HarnessConfig()
    p = subparsers.add_parser(
        "rank", help="rank candidate models on a dataset by neural capacitance",
        description="Fine-tune each candidate briefly with the capacitance probe, record beta_eff, predict "
        "its final accuracy and rank. With no arguments: the demo zoo on the embedded digits dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="dataset: .npz (x, y), ImageFolder directory, .zip of one, or "
                   "a named embedded dataset (digits, mnist5k); default: digits")
    p.add_argument("--candidates", default=None, help="comma-separated: zoo names (see `ncap zoo list`), timm "
                   "names (local HF cache), arch=path/to/weights.safetensors|.pth, arch=random; default: demo zoo")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs per candidate")
    p.add_argument("--out", type=Path, default=Path("runs/rank"), help="output directory")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--probe-width", type=int, default=d.probe_width, help="first hidden width of the probe")
    p.add_argument("--variant", default=d.variant, help="beta_eff variant: default (signed P), support, magnitude (|P|)")
    p.add_argument("--t0", type=int, default=d.t0, help="observations skipped by the predictor")
    p.add_argument("--max-magnitude-flops", type=float, default=d.max_magnitude_flops,
                   help="work limit of the magnitude variant per observation (multiply-adds); a wider probe on a "
                   "wide backbone needs more (default %(default).0e)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="input side in pixels (0 = model default)")
    p.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch)
    p.add_argument("--freeze-backbone", action="store_true", help="train the probe only")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--prune-report", type=float, default=None, metavar="SPARSITY",
                   help="after fine-tuning, magnitude-prune each candidate's probe to this sparsity and attach "
                   "its per-layer degree distributions with power-law fits (pruning_report in ranking.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ncap.models.data import DataError
    from ncap.service.ranking import format_table, run_ranking

    try:
        config = HarnessConfig(epochs=args.epochs, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                               probe_width=args.probe_width, variant=args.variant, t0=args.t0,
                               image_size=args.image_size or None, evals_per_epoch=args.evals_per_epoch,
                               freeze_backbone=args.freeze_backbone, device=args.device,
                               prune_sparsity=args.prune_report, max_magnitude_flops=args.max_magnitude_flops)
        doc = run_ranking(args.data, args.candidates, config, args.out, make_plots=not args.no_plots,
                          progress=not args.quiet)
    except (DataError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"ncap rank: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(doc))
    print(f"\n{doc['dataset']['source']}: {doc['dataset']['n_train']} train / {doc['dataset']['n_val']} val images, "
          f"{doc['config']['epochs']} epochs per candidate, {doc['wall_time_s']:.0f} s in total.")
    print(f"Wrote {args.out / 'ranking.json'}" + (f" and {', '.join(doc['plots'])}" if doc["plots"] else ""))
    return 0
