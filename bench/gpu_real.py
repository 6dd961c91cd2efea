"""Rank the four wheel-shipped ImageNet candidates on elpv at native resolution on a GPU, in one run.

    python -m ncap.bench.gpu_real            # CUDA: the ncap rank defaults (native input sizes, 4 epochs)
    python -m ncap.bench.gpu_real --smoke    # anywhere: 32 px, 1 epoch, 30 images per class, no workers,
                                             # no latency measurement

Per candidate (mobilenetv2_100.tv_in1k, efficientnet_lite{0,1,2}.in1k): the harness's training images/s,
peak GPU memory (``torch.cuda.max_memory_allocated``, reset per candidate), wall time, the Algorithm-1
prediction and the last validation accuracy; then the ranking by predicted accuracy. The whole run is
meant to fit in 8 minutes on one GPU. Writes ``gpu_real.{md,json}`` (``--smoke``: ``gpu_real-smoke.*``)
under ``--out``, marked with the device name.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ncap.capacitance.predictor import predict_final_accuracy, rank_order
from ncap.models.data import load_dataset, sample_per_class, split_dataset
from ncap.models.harness import fine_tune_candidate, resolve_device
from ncap.models.recipe import Recipe
from ncap.models.registry import resolve_candidates

RESULTS = Path(__file__).parent / "results"
CANDIDATES = "mobilenetv2_100.tv_in1k,efficientnet_lite0.in1k,efficientnet_lite1.in1k,efficientnet_lite2.in1k"
TIME_BUDGET_S = 480.0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU ({torch.get_num_threads()} threads)"


def rank_candidate(spec, train, val, recipe: Recipe, device: torch.device) -> dict:
    """One candidate through the harness, with its throughput, peak GPU memory and prediction."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = fine_tune_candidate(spec, train, val, recipe, progress=False)
    row = {"candidate": spec.name, "status": run.status, "error": run.error, "input_size": run.input_size,
           "images_per_s": run.images_per_s, "wall_time_s": run.wall_time_s, "beta_time_s": run.beta_time_s,
           "n_params": run.n_params, "latency_ms": run.latency_ms, "last_accuracy": (run.val_accuracy or [None])[-1],
           "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
           "predicted_accuracy": None, "predicted_std": None}
    if run.status == "ok" and run.val_accuracy:
        v = recipe.variant
        p = predict_final_accuracy(run.beta_eff[v], run.val_accuracy, t0=recipe.t0, denominators=run.beta_denominator[v])
        row.update(predicted_accuracy=p.accuracy, predicted_std=p.std, prediction_method=p.method)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU-friendly settings (tests, no GPU)")
    ap.add_argument("--candidates", default=CANDIDATES)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (smoke: 1)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    fields = {"epochs": args.epochs or (1 if args.smoke else Recipe().epochs)}
    if args.smoke:
        fields.update(image_size=32, num_workers=0, batch_size=16, beta_batch_size=32, evals_per_epoch=2,
                      measure_latency=False)
    recipe = Recipe(**fields)
    device = resolve_device(recipe.device)
    ds = load_dataset("elpv")
    if args.smoke:
        ds = sample_per_class(ds, 30, seed=recipe.seed)
    train, val = split_dataset(ds, val_fraction=recipe.val_fraction, seed=recipe.seed)
    rows = [rank_candidate(spec, train, val, recipe, device)
            for spec in resolve_candidates(args.candidates, progress=False)]
    preds = np.array([np.nan if r["predicted_accuracy"] is None else r["predicted_accuracy"] for r in rows])
    for r, k in zip(rows, rank_order(preds)):
        r["rank"] = int(k)
    rows.sort(key=lambda r: r["rank"])
    seconds = time.perf_counter() - t0
    command = "python -m ncap.bench.gpu_real " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": command.strip(), "device": _device_name(device), "torch": torch.__version__, "smoke": args.smoke,
           "recipe": recipe.to_dict(), "n_train": len(train), "n_val": len(val), "rows": rows, "seconds": seconds,
           "within_budget": seconds <= TIME_BUDGET_S}
    stem = "gpu_real-smoke" if args.smoke else "gpu_real"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Four ImageNet candidates ranked on elpv ({out['device']})", "",
             (f"Command: `{out['command']}` (torch {torch.__version__}; {len(train)} train / {len(val)} val images, "
              f"{recipe.epochs} epochs, input size {'native' if recipe.image_size is None else recipe.image_size}, "
              f"AMP {recipe.amp}; {seconds:.0f} s in total, budget {TIME_BUDGET_S:.0f} s)."), "",
             "| rank | candidate | input | predicted acc | last acc | train img/s | peak GPU memory | wall (s) | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = "—" if r["predicted_accuracy"] is None else f"{100 * r['predicted_accuracy']:.1f} ± {100 * r['predicted_std']:.1f}"
        last = "—" if r["last_accuracy"] is None else f"{100 * r['last_accuracy']:.1f}"
        mem = "—" if r["peak_gpu_memory_bytes"] is None else f"{r['peak_gpu_memory_bytes'] / 2**30:.2f} GiB"
        ips = "—" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        size = "×".join(map(str, r["input_size"] or []))
        lines.append(f"| {r['rank']} | {r['candidate']} | {size} | {pred} | {last} | {ips} | {mem} | "
                     f"{r['wall_time_s']:.0f} | {r['status']} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
