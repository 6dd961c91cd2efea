"""Speed of ``ncap.network.fit_power_law`` against ``powerlaw.Fit`` (powerlaw 2.0) on the same data.

    python -m ncap.bench.powerlaw_speed                      # sizes 1e5, 3e5, 1e6 (powerlaw takes minutes)
    python -m ncap.bench.powerlaw_speed --sizes 20000        # quick look

Data (fixed seed): a discrete power law with alpha = 2.5 above x_min = 10 for half of the sample, the
other half uniform integers in [1, 10). Both fitters solve the same problem:

* ``powerlaw.Fit(x, discrete=True, estimate_discrete=False, parameter_ranges={"alpha": [1, 50]})``:
  ``estimate_discrete=False`` makes it maximise the exact zeta likelihood (by default it uses the
  approximation ``1 + n / sum(log(x / (x_min - 1/2)))`` for ``x_min >= 10``), and the widened range lifts
  its default cap ``alpha in (0, 3)``, outside which candidates are discarded;
* ``fit_power_law(x, ks_variant="left")``: ``powerlaw``'s KS convention (``P(X < x)`` at observed values).

Also timed: ``fit_power_law`` with its default KS (``"sup"``, exact supremum), and ``powerlaw.Fit`` with
its defaults at the smallest size, to show what the defaults return. Times are wall clock, best of
``--repeats`` for ours (one run for ``powerlaw``), measured in one process. Writes
``bench/results/powerlaw_speed.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from ncap.network import fit_power_law, sample_power_law

RESULTS = Path(__file__).parent / "results"
ALPHA, XMIN, SEED = 2.5, 10, 0
PL_OPTIONS = {"discrete": True, "estimate_discrete": False, "parameter_ranges": {"alpha": [1.0, 50.0]}, "verbose": 0}


def make_data(n: int, seed: int = SEED) -> np.ndarray:
    """Half uniform integers below XMIN, half exact discrete power law above it; shape (n,)."""
    rng = np.random.default_rng(seed)
    k = n // 2
    return np.concatenate([rng.integers(1, XMIN, n - k).astype(np.float64), sample_power_law(k, ALPHA, XMIN, rng=rng)])


def _time(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(sizes: list[int], repeats: int) -> dict:
    import powerlaw

    rows = []
    for n in sizes:
        x = make_data(n)
        t_ours, ours = _time(lambda x=x: fit_power_law(x, ks_variant="left"), repeats)
        t_sup, sup = _time(lambda x=x: fit_power_law(x), repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ref = powerlaw.Fit(x, **PL_OPTIONS)
            t_ref = time.perf_counter() - t0
        row = {
            "n": n,
            "n_unique": int(np.unique(x).size),
            "powerlaw_s": t_ref,
            "ours_s": t_ours,
            "speedup": t_ref / t_ours,
            "ours_sup_s": t_sup,
            "powerlaw": {"xmin": float(ref.xmin), "alpha": float(ref.alpha), "ks": float(ref.D),
                         "n_tail": int(ref.n_tail)},
            "ours": {"xmin": ours.xmin, "alpha": ours.alpha, "ks": ours.ks, "n_tail": ours.n_tail,
                     "alpha_se": ours.alpha_se},
            "ours_sup": {"xmin": sup.xmin, "alpha": sup.alpha, "ks": sup.ks},
            "abs_d_alpha": abs(ours.alpha - float(ref.alpha)),
            "abs_d_xmin": abs(ours.xmin - float(ref.xmin)),
        }
        rows.append(row)
        print(f"n={n:>8}: powerlaw {t_ref:8.2f} s  ours {t_ours:6.3f} s  x{row['speedup']:.0f}  "
              f"xmin {ref.xmin:g}/{ours.xmin:g}  alpha {ref.alpha:.5f}/{ours.alpha:.5f}", flush=True)
    # what powerlaw's defaults give on the smallest sample
    x = make_data(sizes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        d = powerlaw.Fit(x, discrete=True, verbose=0)
        t_def = time.perf_counter() - t0
    defaults = {"n": sizes[0], "seconds": t_def, "xmin": float(d.xmin), "alpha": float(d.alpha)}
    return {
        "command": "python -m ncap.bench.powerlaw_speed --sizes " + ",".join(str(s) for s in sizes)
        + f" --repeats {repeats}",
        "data": f"seed {SEED}: n/2 uniform integers in [1, {XMIN}), n/2 discrete power law alpha={ALPHA}, "
        f"xmin={XMIN}",
        "powerlaw_options": PL_OPTIONS,
        "ours_options": {"ks_variant": "left"},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
        "(shared with other jobs)",
        "powerlaw_version": powerlaw.__version__ if hasattr(powerlaw, "__version__") else "2.0",
        "rows": rows,
        "powerlaw_defaults": defaults,
    }


def to_markdown(res: dict) -> str:
    lines = [
        "# Power-law fit speed: `fit_power_law` vs `powerlaw.Fit` (powerlaw 2.0)",
        "",
        (f"Command: `{res['command']}`. Data: {res['data']}. Machine: {res['machine']}; "
        "wall-clock times measured in one run (ours: best of repeats; powerlaw: one run)."),
        "",
        ("Same problem for both: `powerlaw.Fit(x, discrete=True, estimate_discrete=False, "
        "parameter_ranges={'alpha': [1, 50]})` (exact zeta MLE, alpha cap (0, 3) lifted) vs "
        "`fit_power_law(x, ks_variant='left')` (powerlaw's KS convention)."),
        "",
        ("| n | distinct values | powerlaw (s) | ours (s) | speed-up | xmin powerlaw / ours | "
        "alpha powerlaw / ours | abs Δalpha | abs Δxmin | ours, default KS `sup` (s) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['n_unique']:,} | {r['powerlaw_s']:.2f} | {r['ours_s']:.3f} | "
            f"{r['speedup']:.0f}x | {r['powerlaw']['xmin']:g} / {r['ours']['xmin']:g} | "
            f"{r['powerlaw']['alpha']:.5f} / {r['ours']['alpha']:.5f} | {r['abs_d_alpha']:.1e} | "
            f"{r['abs_d_xmin']:g} | {r['ours_sup_s']:.3f} |"
        )
    d = res["powerlaw_defaults"]
    lines += [
        "",
        "alpha differences are powerlaw's Nelder-Mead tolerance (1e-4); ours solves the likelihood "
        "equation to ~1e-11. Our alpha standard errors (observed Fisher information): "
        + ", ".join(f"{r['ours']['alpha_se']:.4f}" for r in res["rows"]) + ".",
        "",
        (f"For reference, `powerlaw.Fit(x, discrete=True)` with its defaults on n = {d['n']:,}: "
        f"xmin = {d['xmin']:g}, alpha = {d['alpha']:.5f} in {d['seconds']:.2f} s (for xmin >= 10 it "
        "returns the closed-form approximation, not the discrete MLE, and it would discard any candidate "
        "with alpha >= 3)."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000",
                    help="comma-separated sample sizes (default 1e5, 3e5, 1e6)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats for our fitter (best taken)")
    ap.add_argument("--out", default=str(RESULTS), help="output directory")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    res = run(sizes, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "powerlaw_speed.json").write_text(json.dumps(res, indent=2))
    (out / "powerlaw_speed.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
