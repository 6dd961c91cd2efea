"""The walk of the ranking path's recipe: through how many functions and files a ``Recipe`` travels in one
``ncap rank`` run, measured by tracing the run itself.

    python -m ncap.service.measurements.recipe_walk [--json]

It runs ``ncap rank`` in this process on a small job (digits, one random ResNet-10t, one epoch at 32 px, no plots)
under :func:`sys.setprofile` and counts, among the functions of this repository:

* **stops**: the distinct functions called with a ``Recipe`` among their arguments (the Recipe's own methods,
  in ``models/recipe.py``, are the recipe itself and are not counted);
* **files**: the distinct files those functions live in;
* **returns**: the distinct functions that return a ``Recipe`` (a recipe rebuilt or replaced on the way).

Fewer stops, files and returns mean a shorter path to read from the command line to the training loop. The
numbers are a property of the code, not of the machine (the same run gives the same walk).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = (".venv", "tests", "site-packages")  # not the repository's own code
JOB = ["--data", "digits", "--candidates", "resnet10t=random", "--epochs", "1", "--image-size", "32", "--no-plots", "--quiet",
       "--keep", "0"]


def _is_recipe(value, recipe_type) -> bool:
    return isinstance(value, recipe_type)


def trace_walk(argv: list[str]) -> dict:
    """Run ``ncap rank ARGV`` traced; return ``{"stops": [...], "files": [...], "returns": [...]}`` (each sorted,
    functions as ``file:qualname``)."""
    from ncap.models.recipe import Recipe
    from ncap.service.cli import main as cli_main

    stops: set[str] = set()
    returns: set[str] = set()
    root = str(ROOT)

    def where(frame) -> str | None:
        path = frame.f_code.co_filename
        if (not path.startswith(root + "/") or any(f"/{skip}/" in path for skip in SKIP)
                or path.endswith("/models/recipe.py") or path == __file__):
            return None
        return f"{Path(path).relative_to(ROOT)}:{frame.f_code.co_qualname}"

    def profile(frame, event, arg):
        if event not in ("call", "return"):
            return
        name = where(frame)
        if name is None:
            return
        if event == "call":
            n_args = frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount
            args = [frame.f_locals.get(v) for v in frame.f_code.co_varnames[:n_args]]
            if any(_is_recipe(a, Recipe) for a in args):
                stops.add(name)
        elif _is_recipe(arg, Recipe):
            returns.add(name)

    sys.setprofile(profile)
    try:
        code = cli_main(["rank", *argv])
    finally:
        sys.setprofile(None)
    if code != 0:
        raise RuntimeError(f"ncap rank exited {code}")
    files = sorted({s.split(":")[0] for s in stops})
    return {"stops": sorted(stops), "files": files, "returns": sorted(returns)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.service.measurements.recipe_walk",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the walk as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ncap-walk-") as tmp:
        walk = trace_walk([*JOB, "--out", tmp])
    if args.json:
        print(json.dumps(walk, indent=1))
    else:
        print(f"{len(walk['stops'])} stops, {len(walk['files'])} files, {len(walk['returns'])} returns")
        for s in walk["stops"]:
            print(f"  stop    {s}")
        for r in walk["returns"]:
            print(f"  returns {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
