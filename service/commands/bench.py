"""`ncap bench`: the model-selection benchmark (see bench/__main__.py)."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run the model-selection benchmark (ncap vs baselines)",
                              description="Rank the zoo on benchmark tasks with every ranker and report Spearman rho, "
                              "weighted tau and top-1 regret against full fine-tunes.")
    p.add_argument("--quick", action="store_true", help="small version (~5 min on 2 cores)")
    p.add_argument("--rebuild", action="store_true", help="recompute cached full fine-tunes")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=lambda a: __import__("bench.__main__", fromlist=["main"]).main(
        [*(["--quick"] if a.quick else []), *(["--rebuild"] if a.rebuild else []), *(["--quiet"] if a.quiet else [])]))
