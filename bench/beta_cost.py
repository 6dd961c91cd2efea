"""Cost of β_eff relative to one forward+backward of the probe, and the memory it needs.

    python -m ncap.bench.beta_cost [--widths 512,256,128,64,10] [--batch 256] [--repeats 20]

Writes bench/results/beta_cost.{md,json}. Memory is measured as the peak of tracked torch CPU
allocations (tracemalloc does not see them, so we use the profiler's memory accounting) and compared
against the number of entries of P, which is never built.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ncap.capacitance.beta_eff import MAX_MAGNITUDE_FLOPS, capacitance, magnitude_flops
from ncap.capacitance.line_graph import probe_linear_layers

RESULTS = Path(__file__).parent / "results"


def make_probe(widths):
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def peak_memory_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # running sum of allocations/frees in event order gives the peak of live tensor memory
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak


def run(widths, batch, repeats, seed=0):
    torch.manual_seed(seed)
    probe = make_probe(widths)
    x = torch.randn(batch, widths[0])
    y = torch.randint(0, widths[-1], (batch,))

    def fwd_bwd():
        probe.zero_grad(set_to_none=True)
        F.cross_entropy(probe(x), y).backward()

    rows = []
    t_fb = timed(fwd_bwd, repeats)
    m_fb = peak_memory_bytes(fwd_bwd)
    n_w = sum(m.weight.numel() for m in probe_linear_layers(probe))
    for variant in ("default", "support", "magnitude"):
        if variant == "magnitude" and magnitude_flops(probe_linear_layers(probe), batch) > MAX_MAGNITUDE_FLOPS:
            rows.append({"variant": variant, "skipped": "refused by max_magnitude_flops on this probe"})
            continue
        t = timed(lambda v=variant: capacitance(probe, x, y, variant=v), max(3, repeats // (1 if variant == "default" else 4)))
        mem = peak_memory_bytes(lambda v=variant: capacitance(probe, x, y, variant=v))
        rows.append({"variant": variant, "seconds": t, "ratio_to_fwd_bwd": t / t_fb, "peak_bytes": mem,
                     "peak_ratio_to_fwd_bwd": mem / m_fb})
    return {
        "widths": list(widths), "batch": batch, "n_weights": n_w, "P_entries_if_dense": n_w * n_w,
        "P_bytes_if_dense_float32": 4 * n_w * n_w, "fwd_bwd_seconds": t_fb, "fwd_bwd_peak_bytes": m_fb,
        "variants": rows, "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="512,256,128,64,10")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    results = [run(tuple(int(w) for w in args.widths.split(",")), args.batch, args.repeats)]
    # a smaller probe (the size ncap's benchmark uses) where the magnitude variant is affordable
    results.append(run((128, 64, 32, 16, 10), args.batch, args.repeats))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "beta_cost.json").write_text(json.dumps(results, indent=2))
    lines = ["# Cost of β_eff (matrix-free) vs one forward+backward of the probe", "",
             (f"Command: `python -m ncap.bench.beta_cost --widths {args.widths} --batch {args.batch} --repeats {args.repeats}` "
             f"({results[0]['torch_threads']} torch threads, CPU). Median of repeats; ratios measured in one run."), ""]
    for r in results:
        lines += [f"## Probe {tuple(r['widths'])}, batch {r['batch']}", "",
                  (f"{r['n_weights']:,} weights → a dense P would hold {r['P_entries_if_dense']:,} entries "
                  f"({r['P_bytes_if_dense_float32'] / 2**30:.1f} GiB in float32). One forward+backward: "
                  f"{r['fwd_bwd_seconds'] * 1e3:.2f} ms, peak {r['fwd_bwd_peak_bytes'] / 2**20:.2f} MiB."), "",
                  "| variant | time (ms) | × forward+backward | peak memory (MiB) | × fwd+bwd memory |", "|---|---|---|---|---|"]
        for v in r["variants"]:
            if "skipped" in v:
                lines.append(f"| {v['variant']} | — | {v['skipped']} | — | — |")
            else:
                lines.append(f"| {v['variant']} | {v['seconds'] * 1e3:.2f} | {v['ratio_to_fwd_bwd']:.2f} | "
                             f"{v['peak_bytes'] / 2**20:.2f} | {v['peak_ratio_to_fwd_bwd']:.2f} |")
        lines.append("")
    (RESULTS / "beta_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
