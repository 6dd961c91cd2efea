"""`ncap` command line: one subcommand per module in `service/commands/`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed args, returns an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `ncap --help` lists them.
COMMAND_MODULES = (
    "ncap.service.commands.rank",
    "ncap.service.commands.zoo",
    "ncap.service.commands.bench",
    "ncap.service.commands.serve",
    "ncap.service.commands.keys",
    "ncap.service.commands.finetune",
    "ncap.service.commands.prune",
    "ncap.service.commands.powerlaw",
    "ncap.service.commands.sparse_train",
)


class _ExactParser(argparse.ArgumentParser):
    """argparse without prefix matching: ``--epoch 1`` is an error, not ``--epochs 1``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    import ncap

    parser = _ExactParser(
        prog="ncap",
        description="Rank pretrained candidate models by neural capacitance (beta_eff) from a few epochs "
        "of fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"ncap {ncap.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ExactParser)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
