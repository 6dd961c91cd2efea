"""`ncap powerlaw FILE`: power-law / bounded-power-law fit and likelihood-ratio comparisons of a sample.

FILE holds numbers separated by whitespace or newlines (``-`` reads stdin; ``#`` starts a comment).
Default output is a human-readable report; ``--json`` prints exactly one JSON object
``{"power_law": {...}, "truncated_power_law": {...}, "comparisons": {...}, "n": ..., "dropped_nonpositive": ...}``.
Values <= 0 (zero-degree nodes) are dropped before the fit, counted on stderr and in the report. Bad input
(unreadable file, non-numeric token, fewer than 10 positive values, non-integers for a discrete fit) is reported
on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

from ncap.network.powerlaw import MIN_SAMPLES


class InputError(ValueError):
    """A problem with the user's input, reported without a traceback."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "powerlaw",
        help="fit a power law (Clauset et al. 2009) and a bounded power law to a sample",
        description="Fit a discrete (default) or continuous power law with KS-chosen xmin, a bounded power "
        "law with KS-chosen [xmin, xmax], and compare the power law with lognormal, exponential and "
        "cutoff power law by likelihood ratios.",
    )
    p.add_argument("file", metavar="FILE", help="numbers, whitespace or newline separated; '-' for stdin")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap replicates for the goodness-of-fit p-value (0 = skip; ~2500 for +-0.01)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the bootstrap")
    p.add_argument("--plot", metavar="PATH", help="write the log-log CCDF with the fits to PATH (png, pdf, svg)")
    p.add_argument("--continuous", action="store_true",
                   help="continuous data (e.g. eigenvalues) instead of integer counts/degrees")
    p.set_defaults(func=run)


def read_values(text: str) -> list[float]:
    """Parse whitespace-separated numbers; raise InputError naming the line of a bad token."""
    values: list[float] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for tok in line.split("#", 1)[0].split():
            try:
                v = float(tok)
            except ValueError:
                raise InputError(f"line {lineno}: not a number: {tok!r}") from None
            if not math.isfinite(v):
                raise InputError(f"line {lineno}: not a finite number: {tok!r}")
            values.append(v)
    return values


def _load(path: str) -> list[float]:
    if path == "-":
        return read_values(sys.stdin.read())
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"is a directory, not a file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    return read_values(text)


def _positive(values: list[float]) -> tuple[list[float], int]:
    """(the positive values, how many were dropped): a power law has no mass at x <= 0, and a degree sequence
    has zero-degree nodes (isolated or dormant ones), so they are dropped, counted, and reported, as the
    powerlaw package does."""
    kept = [v for v in values if v > 0]
    return kept, len(values) - len(kept)


def _check(values: list[float], discrete: bool) -> None:
    if len(values) < MIN_SAMPLES:
        raise InputError(f"need at least {MIN_SAMPLES} positive values, got {len(values)}")
    if discrete:
        frac = [v for v in values if not float(v).is_integer()]
        if frac:
            raise InputError(f"discrete fit needs integers; got {len(frac)} non-integer value(s) "
                             f"(e.g. {frac[0]:g}); pass --continuous for continuous data")


def _report_text(rep: dict, best: str) -> str:
    pl, tpl = rep["power_law"], rep["truncated_power_law"]
    p = "not computed (use --bootstrap N)" if pl["p_value"] is None else f"{pl['p_value']:.3f}"
    lines = [
        f"n = {rep['n']}" + (f" (after dropping {rep['dropped_nonpositive']} value(s) <= 0)"
                             if rep["dropped_nonpositive"] else ""),
        "power law  p(x) ~ x^-alpha, x >= xmin",
        f"  alpha   = {pl['alpha']:.4f} +- {pl['alpha_se']:.4f}",
        f"  xmin    = {pl['xmin']}   (n_tail = {pl['n_tail']})",
        f"  KS      = {pl['ks']:.4f}",
        f"  p-value = {p}   (power law plausible if p > 0.1)",
        "bounded power law  p(x) ~ x^-alpha, xmin <= x <= xmax",
        f"  alpha   = {tpl['alpha']:.4f}",
        f"  range   = [{tpl['xmin']}, {tpl['xmax']}]   (n = {tpl['n_tail']})",
        f"  KS      = {tpl['ks']:.4f}",
        "likelihood ratio, power law vs alternative (R > 0 favours the power law)",
    ]
    for name, v in rep["comparisons"].items():
        lines.append(f"  {name:<17} R = {v['R']:+8.3f}   p = {v['p']:.3g}")
    lines.append(f"preferred: {best}" + ("" if best == "power_law" else " (over the power law, p < 0.1)"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ncap.network import best_alternative, fit_sample, plot_ccdf

    discrete = not args.continuous
    try:
        if args.bootstrap < 0:
            raise InputError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        values, dropped = _positive(_load(args.file))
        if dropped:
            print(f"ncap powerlaw: dropped {dropped} value(s) <= 0 (a power law has no mass there); fitting the "
                  f"other {len(values)}", file=sys.stderr)
        _check(values, discrete)
        x = np.asarray(values, dtype=np.float64)
        with warnings.catch_warnings():  # fit problems are reported in the output (at_bound), not as warnings
            warnings.simplefilter("ignore")
            fits = fit_sample(x, args.bootstrap, args.seed, discrete=discrete)
    except (InputError, ValueError) as exc:
        print(f"ncap powerlaw: error: {exc}", file=sys.stderr)
        return 2
    fit, tpl = fits.power_law, fits.truncated_power_law
    rep = {**fits.to_dict(), "dropped_nonpositive": dropped}
    if args.plot:
        ax = plot_ccdf(x, fit, tpl)
        try:
            ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        except (OSError, ValueError) as exc:
            print(f"ncap powerlaw: error: cannot write plot {args.plot}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(rep))
    else:
        print(_report_text(rep, best_alternative(rep["comparisons"])))
        for name, f in (("power law", fit), ("bounded power law", tpl)):
            if f.at_bound:
                print(f"note: the {name} alpha sits on its search bound; it is a bound, not an estimate")
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0
