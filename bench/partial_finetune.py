"""Partial fine-tuning (``Recipe.trainable``): speed against a full fine-tune, and the number of cached views.

    python -m ncap.bench.partial_finetune speed [--data elpv]
    python -m ncap.bench.partial_finetune views [--data elpv] [--views 1,2,4] [--seeds 0,1,2]

``speed``: for each of the four ImageNet models at its native size, side by side in one process: one epoch of
``trainable=top`` (over the cached activations; the cache is built first if it is missing, and timed apart)
and one epoch of ``trainable=all`` (the harness's DataLoader and timm training transform), both through the
harness with the ``ncap rank`` defaults on its split; an epoch's time is the training loop's (the harness's
``train_time_s``: data, forward, backward, optimiser; the observation after it is not counted). Ratio =
all / top. Writes ``bench/results/partial_speed.{json,md}``.

``views``: the default of ``Recipe.cached_views``. The ImageNet models fine-tune with ``trainable=top`` on
one fixed split (seed 0) for each number of views and each training seed (probe init, order, view draws);
reports the last validation accuracy (mean ± SD over seeds) and the caching time. Writes
``bench/results/partial_views.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ncap.models.data import load_dataset, split_dataset
from ncap.models.harness import fine_tune_candidate, resolve_device
from ncap.models.recipe import Recipe
from ncap.models.registry import resolve_candidates

RESULTS = Path(__file__).parent / "results"
IMAGENET = ["mobilenetv2_100.tv_in1k", "efficientnet_lite0.in1k", "efficientnet_lite1.in1k", "efficientnet_lite2.in1k"]


def _machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(resolve_device("auto"))}


def speed(args) -> dict:
    ds = load_dataset(args.data)
    train, val = split_dataset(ds, 0.2, 0)  # ncap rank's split (seed 0): its activation cache is reused
    rows = []
    for spec in resolve_candidates(args.candidates.split(","), progress=False):
        recipe = Recipe(epochs=1, evals_per_epoch=1, measure_latency=False)
        top = fine_tune_candidate(spec, train, val, recipe.model_copy(update={"trainable": "top"}), progress=False)
        full = fine_tune_candidate(spec, train, val, recipe, progress=False)
        rows.append({"candidate": spec.name, "all_epoch_s": full.train_time_s, "top_epoch_s": top.train_time_s,
                     "ratio": full.train_time_s / top.train_time_s, "top_cache_s": top.cache_time_s,
                     "top_cache_reused": top.cache_reused, "top_cache_build_cpu_s": top.cache_build_cpu_s,
                     "all_val_acc_1_epoch": full.val_accuracy[-1], "top_val_acc_1_epoch": top.val_accuracy[-1]})
        print(json.dumps(rows[-1]), flush=True)
    return {"command": f"python -m ncap.bench.partial_finetune speed --data {args.data}", "machine": _machine(),
            "n_train": len(train), "rows": rows}


def views(args) -> dict:
    ds = load_dataset(args.data)
    train, val = split_dataset(ds, 0.2, 0)
    rows = []
    for spec in resolve_candidates(args.candidates.split(","), progress=False):
        for k in (int(v) for v in args.views.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                recipe = Recipe(trainable="top", cached_views=k, seed=seed, measure_latency=False)
                run = fine_tune_candidate(spec, train, val, recipe, progress=False)
                rows.append({"candidate": spec.name, "views": k, "seed": seed, "val_acc": run.val_accuracy[-1],
                             "cache_s": run.cache_time_s, "cache_reused": run.cache_reused,
                             "train_s": run.train_time_s})
                print(json.dumps(rows[-1]), flush=True)
    return {"command": f"python -m ncap.bench.partial_finetune views --data {args.data} --views {args.views} "
                       f"--seeds {args.seeds}", "machine": _machine(), "rows": rows}


def speed_markdown(doc: dict) -> str:
    lines = ["# Partial fine-tuning speed: `trainable=top` against `all`\n", f"`{doc['command']}`\n",
             f"Machine: {doc['machine']}. {doc['n_train']} training images per epoch, native sizes, batch 64.\n",
             "| candidate | all: s/epoch | top: s/epoch | all / top | top's cache: built in (CPU s) |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['candidate']} | {r['all_epoch_s']:.0f} | {r['top_epoch_s']:.1f} | **{r['ratio']:.1f}×** | "
                     f"{r['top_cache_build_cpu_s']:.0f} |")
    ok = all(r["ratio"] >= 5 for r in doc["rows"])
    lines.append(f"\nTarget ≥ 5× per epoch for every model: **{'met' if ok else 'missed'}**.")
    return "\n".join(lines) + "\n"


def views_markdown(doc: dict) -> str:
    lines = ["# Cached views per training image (`cached_views`)\n", f"`{doc['command']}`\n",
             f"Machine: {doc['machine']}. trainable=top, 4 epochs, one split (seed 0), seeds vary the training.\n",
             "| candidate | views | last val acc (mean ± SD) | caching s |", "|---|---|---|---|"]
    keys = sorted({(r["candidate"], r["views"]) for r in doc["rows"]})
    for cand, k in keys:
        rs = [r for r in doc["rows"] if r["candidate"] == cand and r["views"] == k]
        acc = np.array([r["val_acc"] for r in rs]) * 100
        cache = max(r["cache_s"] for r in rs)
        lines.append(f"| {cand} | {k} | {acc.mean():.1f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.1f} | {cache:.0f} |")
    lines += ["", *views_pooled(doc["rows"])]
    return "\n".join(lines) + "\n"


def views_pooled(rows: list[dict]) -> list[str]:
    """Per number of views, pooled over candidates: the mean last accuracy, and its paired difference from
    each other K (same candidate and seed) with a t interval over the pairs."""
    from scipy import stats

    acc = {(r["candidate"], r["seed"], r["views"]): 100 * r["val_acc"] for r in rows}
    ks = sorted({r["views"] for r in rows})
    out = ["| views | mean last val acc, pooled | difference from the next K (paired, 95 % t interval) |",
           "|---|---|---|"]
    for i, k in enumerate(ks):
        mine = [v for (c, s, kk), v in acc.items() if kk == k]
        cell = "—"
        if i + 1 < len(ks):
            d = np.array([acc[(c, s, k)] - acc[(c, s, ks[i + 1])] for (c, s, kk) in acc if kk == k
                          and (c, s, ks[i + 1]) in acc])
            if len(d) > 1:
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                cell = f"K={k} − K={ks[i + 1]}: {d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] pt over {len(d)} pairs"
        out.append(f"| {k} | {np.mean(mine):.2f} | {cell} |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ncap.bench.partial_finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["speed", "views"])
    p.add_argument("--data", default="elpv")
    p.add_argument("--candidates", default=",".join(IMAGENET))
    p.add_argument("--views", default="1,2,4")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    doc = speed(args) if args.what == "speed" else views(args)
    doc["wall_s"] = time.perf_counter() - t0
    name = f"partial_{args.what}"
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1))
    (RESULTS / f"{name}.md").write_text(speed_markdown(doc) if args.what == "speed" else views_markdown(doc))
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
