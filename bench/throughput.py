"""Training throughput of the ncap harness (with β_eff tracking) against a plain timm/torch loop.

    python -m ncap.bench.throughput [--candidate mobilenetv2_100.tv_in1k] [--data elpv] [--image-size 64]
        [--epochs 1] [--repeats 2]

Both train the same timm architecture on the same training split with the same batch size, resolution,
loader workers and timm training transform, alternately (plain, harness, plain, harness, ...) in one
process, so machine noise hits both alike.

* plain: ``timm.create_model(arch, num_classes=K)``, a ``torch.utils.data.DataLoader`` over a minimal
  Dataset written here (PIL image → timm ``create_transform(is_training=True)``), AdamW, cross-entropy;
  images/s = images / wall time of the loop.
* harness: :func:`ncap.models.harness.fine_tune_candidate` with the ``ncap rank`` defaults at that size;
  images/s = training images / (its training-loop time + its β_eff time). The validation passes of its
  observations are left out (a plain loop that validated would pay them too); they are reported.

Target: harness / plain ≥ 0.95. Writes bench/results/throughput.{md,json}.
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

from ncap.models.data import LIGHT_AUGMENTATION, load_dataset, resolve_num_workers, split_dataset
from ncap.models.harness import fine_tune_candidate, resolve_device
from ncap.models.recipe import Recipe
from ncap.models.registry import resolve_candidates

RESULTS = Path(__file__).parent / "results"


class PlainImages(torch.utils.data.Dataset):
    """What a user would write: image i as RGB PIL, through a timm transform."""

    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.transform(self.ds.pil_image(i).convert("RGB")), int(self.ds.y[i])


def plain_loop(arch: str, train, recipe: Recipe, device: torch.device) -> dict:
    """One plain timm fine-tune of ``recipe.epochs`` epochs; images/s over the whole loop."""
    import timm
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(recipe.seed)
    model = timm.create_model(arch, num_classes=train.num_classes).to(device)
    cfg = resolve_data_config({}, model=model)
    tf = create_transform((3, recipe.image_size, recipe.image_size), is_training=True, mean=cfg["mean"],
                          std=cfg["std"], interpolation=cfg["interpolation"], **LIGHT_AUGMENTATION)
    workers = resolve_num_workers(recipe.num_workers, device)
    loader = torch.utils.data.DataLoader(PlainImages(train, tf), batch_size=recipe.batch_size, shuffle=True,
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.train()
    images = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(recipe.epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(y)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "cpu_s": cpu,
            "images_per_cpu_s": images / cpu}


def harness_run(spec, train, val, recipe: Recipe) -> dict:
    run = fine_tune_candidate(spec, train, val, recipe, progress=False)
    if run.status != "ok":
        raise RuntimeError(f"{spec.name} failed: {run.error}")
    images = round(run.images_per_s * run.train_time_s)
    seconds = run.train_time_s + run.beta_time_s
    cpu = run.train_cpu_s + run.beta_time_s  # β_eff by its wall timer (≥ its CPU time)
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "cpu_s": cpu,
            "images_per_cpu_s": images / cpu, "train_time_s": run.train_time_s, "beta_time_s": run.beta_time_s,
            "wall_time_s": run.wall_time_s, "observations_and_setup_s": run.wall_time_s - seconds}


def main(argv=None) -> int:
    from ncap.models.pretrained import timm_arch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default="mobilenetv2_100.tv_in1k")
    ap.add_argument("--data", default="elpv")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    recipe = Recipe(epochs=args.epochs, image_size=args.image_size, num_workers=args.num_workers, measure_latency=False)
    device = resolve_device(recipe.device)
    train, val = split_dataset(load_dataset(args.data), val_fraction=recipe.val_fraction, seed=recipe.seed)
    spec = resolve_candidates(args.candidate, progress=False)[0]
    arch = timm_arch(spec.arch)
    rows: dict[str, list[dict]] = {"plain": [], "harness": []}  # alternating, so machine noise hits both
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        rows["plain"].append(plain_loop(arch, train, recipe, device))
        rows["harness"].append(harness_run(spec, train, val, recipe))
        print({k: round(v[-1]["images_per_s"], 2) for k, v in rows.items()}, flush=True)
    med = {k: float(np.median([r["images_per_s"] for r in v])) for k, v in rows.items()}
    med_cpu = {k: float(np.median([r["images_per_cpu_s"] for r in v])) for k, v in rows.items()}
    pairs = [h["images_per_s"] / p["images_per_s"] for p, h in zip(rows["plain"], rows["harness"])]
    command = "python -m ncap.bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": command.strip(), "machine": f"{platform.machine()} {device.type.upper()}, torch threads "
           f"{torch.get_num_threads()}", "candidate": args.candidate, "arch": arch, "data": args.data,
           "n_train": len(train), "image_size": args.image_size, "batch_size": recipe.batch_size,
           "epochs": args.epochs, "num_workers": resolve_num_workers(recipe.num_workers, device), "rows": rows,
           "median_images_per_s": med, "ratio_of_medians": med["harness"] / med["plain"], "ratio_per_pair": pairs,
           "median_images_per_cpu_s": med_cpu, "cpu_ratio_of_medians": med_cpu["harness"] / med_cpu["plain"],
           "seconds": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(out, indent=1))
    lines = ["# Training throughput: ncap harness (with β_eff tracking) vs a plain timm/torch loop", "",
             (f"Command: `{out['command']}` ({out['machine']}; {args.data}: {len(train)} training images at "
              f"{args.image_size} px, batch {recipe.batch_size}, {args.epochs} epoch(s) per run, {out['num_workers']} "
              f"loader worker(s), {args.repeats} alternating repeats, {out['seconds']:.0f} s in total)."), "",
             ("| run | plain img/s (wall) | harness img/s (wall) | harness / plain (wall) | plain img per CPU s | "
              "harness img per CPU s | harness / plain (CPU) | harness β_eff s | harness validation + setup s |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for i, (p, h) in enumerate(zip(rows["plain"], rows["harness"]), start=1):
        lines.append(f"| {i} | {p['images_per_s']:.1f} | {h['images_per_s']:.1f} | {h['images_per_s'] / p['images_per_s']:.3f} | "
                     f"{p['images_per_cpu_s']:.1f} | {h['images_per_cpu_s']:.1f} | "
                     f"{h['images_per_cpu_s'] / p['images_per_cpu_s']:.3f} | {h['beta_time_s']:.1f} | "
                     f"{h['observations_and_setup_s']:.1f} |")
    lines += ["", (f"Medians: wall {med['plain']:.1f} vs {med['harness']:.1f} img/s, ratio **{out['ratio_of_medians']:.3f}**; "
                   f"CPU {med_cpu['plain']:.1f} vs {med_cpu['harness']:.1f} images per CPU second, ratio "
                   f"**{out['cpu_ratio_of_medians']:.3f}** (target ≥ 0.95). Harness = training images / (training loop + "
                   "β_eff time); validation passes and model set-up are excluded on both sides. CPU = this process's "
                   "CPU time (one torch thread; with --num-workers 0 the data loading is in it too): the cost itself, "
                   "little affected by the other jobs sharing the machine; wall includes their noise.")]
    (args.out / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
