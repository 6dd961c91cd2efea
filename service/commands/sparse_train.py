"""`ncap sparse-train`: dynamic sparse training (prune + regrow) of an MLP or small CNN, watched through network
science; every rule, layer-density method and fan-in profile of :mod:`ncap.models.sparse` from the command line.

``--rule``, ``--density`` and ``--profile`` take comma-separated lists and run their grid (``dense`` once);
every other flag is a field of :class:`ncap.models.sparse.DSTConfig` (defaults and help come from it). The
report (:mod:`ncap.models.sparse.report`) goes to ``--out``: report.json, report.md, PNG plots and per-run
topology arrays. Bad input (unknown rule or profile, sparsity outside [0, 1), missing data, ...) exits with
code 2 and the reason.
"""
from __future__ import annotations

import argparse
import sys
import typing

__all__ = ["register"]

GRID = ("rule", "density", "profile")
EXAMPLES = """examples:
  ncap sparse-train --data mnist5k --rule random,gradient,momentum --out runs/dst
  ncap sparse-train --data digits --rule gradient --profile random,lognormal --profile-cv 2.5 --out runs/psn
  ncap sparse-train --data mnist5k --rule dense,static,gradient --density uniform,erk --sparsity 0.95
  ncap sparse-train --data mnist5k --model cnn --rule gradient --sparsity 0.8 --epochs 5
"""


def _list_of(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def _add_field(p: argparse.ArgumentParser, name: str, field) -> None:
    flag = "--" + name.replace("_", "-")
    ann, default = field.annotation, field.default
    help_ = (field.description or name.replace("_", " ")) + (f" (default: {default})" if default is not None else "")
    if ann is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        return
    args = typing.get_args(ann)
    if typing.get_origin(ann) is typing.Literal:
        p.add_argument(flag, choices=args, default=None, help=help_)
    elif typing.get_origin(ann) is list or list in (typing.get_origin(a) for a in args):
        inner = next(typing.get_args(a)[0] for a in (ann, *args) if typing.get_origin(a) is list)
        p.add_argument(flag, type=_list_of(inner), default=None, metavar="V[,V...]", help=help_)
    else:
        kind = next((a for a in (ann, *args) if a in (int, float, str)), str)
        p.add_argument(flag, type=kind, default=None, help=help_)


def register(subparsers) -> None:
    from ncap.models.sparse import DENSITY_METHODS, PROFILES, RULES, DSTConfig

    p = subparsers.add_parser(
        "sparse-train", help="dynamic sparse training (SET / RigL / SNFS) with topology tracking and plots",
        description="Sparse initialisation (uniform / ER / ERK layer densities, PSN fan-in profiles), then every "
        "delta-t steps prune a cosine-decaying fraction of the active weights by magnitude and regrow as many by "
        "random (SET), gradient (RigL) or momentum (SNFS). Records degrees, fan-in CV, preferential attachment, "
        "k-shells, dormant neurons and gradient norms at every update; fits power laws at the end.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", metavar="NAME|PATH",
                   help="'digits' (default), 'mnist5k', 'animal-mnist', a .npz, an ImageFolder or a .zip")
    p.add_argument("--rule", type=_list_of(str), default=["gradient"], metavar="R[,R...]",
                   help=f"regrowth rules to run: {', '.join(RULES)} (default: gradient)")
    p.add_argument("--density", type=_list_of(str), default=["erk"], metavar="D[,D...]",
                   help=f"layer-density methods: {', '.join(DENSITY_METHODS)} (default: erk)")
    p.add_argument("--profile", type=_list_of(str), default=["random"], metavar="P[,P...]",
                   help=f"fan-in profiles: {', '.join(PROFILES)} (default: random); lognormal and powerlaw "
                   "need --profile-cv")
    for name, field in DSTConfig.model_fields.items():
        if name not in GRID:
            _add_field(p, name, field)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.md, plots and per-run arrays")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.set_defaults(func=_main)


def _main(args) -> int:
    import pydantic
    import torch

    from ncap.models.sparse import DSTConfig
    from ncap.models.sparse.report import grid_configs, markdown_report, run_grid

    def fail(msg: str) -> int:
        print(f"ncap sparse-train: error: {msg}", file=sys.stderr)
        return 2

    base = {k: v for k, v in vars(args).items() if k in DSTConfig.model_fields and k not in GRID and v is not None}
    try:
        configs = grid_configs(base, args.rule, args.density, args.profile)
    except pydantic.ValidationError as exc:
        return fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))
    if args.threads < 1:
        return fail(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        report = run_grid(configs, args.data, args.out, progress=not args.quiet, log=log)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        return fail(str(exc))
    print(markdown_report(report))
    if args.out:
        print(f"wrote {args.out}/report.json, report.md and {len(report['plots'])} plots")
    return 0
