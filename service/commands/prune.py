"""`ncap prune`: train → prune → retrain a candidate, then report per-layer degree distributions.

Candidates (``--candidate``): ``mlp``, ``mlp:W1,W2,...``, ``cnn`` or one ncap candidate spec; the
pipeline lives in :mod:`ncap.models.prune_pipeline` (this module parses, calls it and prints).

Per node layer the report gives: nodes, which sides count toward the degree, mean degree, the power-law
fit (α, x_min, KS, bootstrap p-value with ``--bootstrap N``), the bounded/truncated power-law fit
(α, x_min, x_max, KS), the likelihood-ratio verdict against lognormal / exponential / cutoff power law
(``power_law``, an alternative, or ``inconclusive``; the JSON also has ``best_alternative`` as
``ncap powerlaw`` reports it), the k-shell range and the number of isolated nodes. ``--out DIR`` writes
``report.json``, ``report.md`` and log-log CCDF plots.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="train, prune, retrain a candidate; report degree distributions (power-law fits)",
        description="Three-step pruning (train -> magnitude-prune a fraction s of every layer but the output "
        "layer -> retrain the survivors) and per-layer degree-distribution fits, k-shells and CCDF plots.")
    p.add_argument("--candidate", required=True, metavar="SPEC",
                   help="'mlp' (paper MLP), 'mlp:W1,W2,...', 'cnn' (paper CNN), or a candidate spec (timm)")
    p.add_argument("--sparsity", required=True, type=float, metavar="S",
                   help="fraction of connections pruned in every pruned layer, 0 <= S < 1 (paper: 0.9)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="'digits' (default), 'mnist5k', a .npz, an ImageFolder directory or a .zip")
    p.add_argument("--epochs", type=int, default=10, help="dense training epochs (default 10)")
    p.add_argument("--retrain-epochs", type=int, default=5, help="retraining epochs after each pruning step (default 5)")
    p.add_argument("--iterative", type=int, default=1, metavar="K",
                   help="reach the sparsity in K pruning steps, retraining after each (default 1 = one shot)")
    p.add_argument("--schedule", choices=("geometric", "linear"), default="geometric",
                   help="sparsity after step j of K: 1-(1-s)^(j/K) (geometric) or s*j/K (linear)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--retrain-lr", type=float, default=None, help="learning rate for retraining (default: --lr)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prune-output", action="store_true", help="also prune the output layer")
    p.add_argument("--scope", choices=("probe", "all"), default="probe",
                   help="timm candidates: prune only the NCP probe on frozen features (default) or everything")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap replicates for the power-law p-value (0 = skip; 100+ is slow)")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.md and CCDF PNGs here")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from ncap.models.prune_pipeline import run_pruning, text_table

    def log(msg):
        print(msg, file=sys.stderr)

    try:
        out = run_pruning(
            args.candidate, args.sparsity, data=args.data, epochs=args.epochs, retrain_epochs=args.retrain_epochs,
            iterative=args.iterative, schedule=args.schedule, lr=args.lr, retrain_lr=args.retrain_lr,
            batch_size=args.batch_size, val_fraction=args.val_fraction, seed=args.seed,
            prune_output=args.prune_output, scope=args.scope, n_bootstrap=args.bootstrap, out_dir=args.out,
            log=None if args.json else log)
    except (ValueError, FileNotFoundError) as exc:  # DataError / CandidateError are ValueErrors
        print(f"ncap prune: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(text_table(out))
        if args.out:
            print(f"wrote {Path(args.out) / 'report.json'}, report.md and {len(out['report'].get('plots', []))} plots")
    return 0
