"""Rank the four wheel-shipped ImageNet candidates on elpv at native resolution on a GPU, in one run.

    python -m ncap.bench.gpu_real            # CUDA: the ncap rank defaults (native input sizes, 4 epochs)
    python -m ncap.bench.gpu_real --smoke    # anywhere: 32 px, 1 epoch, 30 images per class, no workers,
                                             # no latency measurement
    python -m ncap.bench.gpu_real --v3-truth # CUDA: benchmark v3's truth with trainable=all at native size

Per candidate (mobilenetv2_100.tv_in1k, efficientnet_lite{0,1,2}.in1k): the harness's training images/s,
peak GPU memory (``torch.cuda.max_memory_allocated``, reset per candidate), wall time, the Algorithm-1
prediction and the last validation accuracy; then the ranking by predicted accuracy. The whole run is
meant to fit in 8 minutes on one GPU. Writes ``gpu_real.{md,json}`` (``--smoke``: ``gpu_real-smoke.*``)
under ``--out``, marked with the device name.

``--v3-truth`` runs instead what 2 CPU cores cannot: the truth of benchmark v3 (``bench/design_v3.py``: 5 seeds of
its 10-epoch recipe) for the four ImageNet models under ``trainable=all`` at their native size, on v3's
calibration task (``--tasks``), one record per run under ``bench/results/selection-v3/gpu/`` (resumable, like the
CPU runs). ``gpu_real_v3.md`` compares it with the CPU truth of the same models under ``top`` (Spearman ρ and DPA,
``bench/decisive.py``): whether the cheap regime orders the models as a full fine-tune does. Meant to fit in 8
minutes on one H100; ``--smoke`` makes it a CPU test (32 px, 1 epoch, 1 seed, 60 images).
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


def v3_truth_recipe(seed: int, smoke: bool) -> Recipe:
    """The v3 truth recipe of a ``trainable=all`` candidate (one observation at the end, no β_eff), on the GPU
    with loader workers; ``smoke``: 32 px and 1 epoch on any device."""
    from ncap.bench.design_v3 import CALIBRATION, run_recipe

    fields = {**run_recipe(CALIBRATION[0], "seed1").to_dict(), "seed": seed, "num_workers": 0 if smoke else 8}
    if smoke:
        fields.update(image_size=32, epochs=1, observe_at_epochs=[1.0])
    return Recipe.from_dict(fields)


def v3_truth(tasks: list[str], out: Path, smoke: bool, candidates: str) -> dict:
    """Every (task, ImageNet model, seed) of the v3 truth under ``trainable=all``; records reused when present."""
    from scipy import stats

    from ncap.bench import decisive
    from ncap.bench.design_v3 import CANDIDATES as V3_CANDIDATES
    from ncap.bench.design_v3 import TRUTH_SEEDS
    from ncap.bench.selection_v3 import load_record
    from ncap.bench.tasks import TASKS_V3
    from ncap.jsonsafe import write_json

    seeds = TRUTH_SEEDS[:1] if smoke else TRUTH_SEEDS
    specs = resolve_candidates(candidates, progress=False)
    summary = {}
    for task in tasks:
        train, val = TASKS_V3[task].split(*((60, 60) if smoke else (None, None)))
        acc = np.full((len(specs), len(seeds)), np.nan)
        for i, spec in enumerate(specs):
            for k, seed in enumerate(seeds):
                path = out / "selection-v3" / "gpu" / task / f"{spec.name}@all" / f"seed{seed}.json"
                if not path.is_file():
                    recipe = v3_truth_recipe(seed, smoke)
                    run = fine_tune_candidate(spec, train, val, recipe, progress=False)
                    write_json(path, {"task": task, "candidate": f"{spec.name}@all", "recipe": recipe.run_dict(),
                                      "device": _device_name(resolve_device(recipe.device)), **run.to_dict()},
                               default=float)
                doc = json.loads(path.read_text())
                acc[i, k] = doc["val_accuracy"][-1] if doc.get("val_accuracy") else np.nan
        by_name = {c.name: c for c in V3_CANDIDATES}
        names = [f"{s.name}@top" for s in specs]
        cpu = [load_record(task, by_name[n], f"seed{s}") if n in by_name else None for n in names for s in TRUTH_SEEDS]
        row = {"all_seeds": acc.tolist(), "all_mean": np.nanmean(acc, 1).tolist(), "candidates": [s.name for s in specs]}
        if len(specs) > 1 and all(d is not None for d in cpu):
            top = np.array([d["val_accuracy"][-1] for d in cpu]).reshape(len(names), len(TRUTH_SEEDS))
            row.update(top_mean=top.mean(1).tolist(), rho=float(stats.spearmanr(np.nanmean(acc, 1), top.mean(1)).statistic),
                       dpa_top_on_all=decisive.dpa(top.mean(1), acc)[0] if acc.shape[1] > 1 else None)
        summary[task] = row
    return summary


def _v3_main(args, t0: float) -> int:
    summary = v3_truth(args.tasks.split(","), args.out, args.smoke, args.candidates)
    seconds = time.perf_counter() - t0
    device = _device_name(resolve_device(Recipe().device))
    stem = "gpu_real_v3-smoke" if args.smoke else "gpu_real_v3"
    doc = {"command": "python -m ncap.bench.gpu_real --v3-truth" + (" --smoke" if args.smoke else ""), "device": device,
           "seconds": seconds, "within_budget": seconds <= TIME_BUDGET_S, "tasks": summary}
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=float))
    lines = [f"# Benchmark v3's truth under `trainable=all` at native size ({device})", "",
             f"`{doc['command']}`: {seconds:.0f} s (budget {TIME_BUDGET_S:.0f} s).", "",
             "| task | candidate | `all`: mean of the seeds (%) | `top` truth, CPU (%) |", "|---|---|---|---|"]
    for task, row in summary.items():
        for k, name in enumerate(row["candidates"]):
            top = f"{100 * row['top_mean'][k]:.1f}" if "top_mean" in row else "—"
            lines.append(f"| {task} | {name} | {100 * row['all_mean'][k]:.1f} | {top} |")
        if "rho" in row:
            lines += ["", (f"{task}: Spearman ρ(all, top) = {row['rho']:.2f}; DPA of the `top` truth on the `all` "
                           f"truth's decisive pairs = {row['dpa_top_on_all']}.")]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU-friendly settings (tests, no GPU)")
    ap.add_argument("--v3-truth", action="store_true", help="benchmark v3's truth with trainable=all (module doc)")
    ap.add_argument("--tasks", default="elpv-mono", help="--v3-truth's tasks (benchmark v3 task names)")
    ap.add_argument("--candidates", default=CANDIDATES)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (smoke: 1)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.v3_truth:
        return _v3_main(args, t0)
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
