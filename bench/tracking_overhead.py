"""Wall-time cost of β_eff tracking, and what measuring on the training window does to β_eff's noise.

    python -m ncap.bench.tracking_overhead [--candidates efficientnet_lite0.in1k,mobilenetv2_100.tv_in1k]
        [--data elpv] [--image-size 64] [--epochs 2] [--repeats 2] [--noise-evals 8]

Per candidate, three fine-tunes with the identical recipe and the same observations (validation accuracy
and training loss every 1/evals_per_epoch epoch) run alternately, ``--repeats`` times, so machine noise
hits them alike: ``plain`` (Recipe.track_beta=False), ``validation`` (β_eff on the features of the first
beta_batch_size images of each observation's validation pass: the default) and ``fixed`` (β_eff on a fixed
batch of training images passed through the backbone in eval mode at each observation: the measurement
before). Measuring β_eff consumes no random numbers, so on CPU the runs train bit-for-bit identically
(checked: same accuracies and losses), and the trajectories are measurements of the same training run. A
second, untimed set at ``--noise-evals`` observations per epoch compares the ``validation``, ``fixed`` and
``window`` (last training images) trajectories: Spearman and Pearson correlation with ``fixed``, roughness
(std of successive differences / std of the values; ≈ 1.41 for white noise, small for a smooth trend) and
the Algorithm-1 prediction from each. Writes bench/results/tracking_overhead.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.models.data import load_dataset, split_dataset
from ncap.models.harness import fine_tune_candidate
from ncap.models.recipe import Recipe
from ncap.models.registry import resolve_candidates

RESULTS = Path(__file__).parent / "results"
MODES = {"plain": {"track_beta": False}, "validation": {"beta_features": "validation"},
         "fixed": {"beta_features": "fixed"}, "window": {"beta_features": "window"}}
TIMED = ("plain", "validation", "fixed")  # window costs what validation costs: no backbone pass either
NOISE = ("fixed", "validation", "window")


def _recipe(args, evals: int, mode: str) -> Recipe:
    return Recipe(epochs=args.epochs, evals_per_epoch=evals, image_size=args.image_size, num_workers=args.num_workers,
                  measure_latency=False, **MODES[mode])


def _timed(args, spec, train, val) -> dict:
    """Alternating plain/window/fixed fine-tunes; wall times, β_eff times and the runs of the first repeat."""
    times = {m: [] for m in TIMED}
    cpu = {m: [] for m in TIMED}
    beta_s = {m: [] for m in TIMED}
    first = {}
    order = list(TIMED)
    for r in range(args.repeats):
        for mode in order[r % 3:] + order[:r % 3]:  # rotate the order between repeats
            c0 = time.process_time()
            run = fine_tune_candidate(spec, train, val, _recipe(args, args.evals_per_epoch, mode), progress=False)
            cpu[mode].append(time.process_time() - c0)
            if run.status != "ok":
                raise RuntimeError(f"{spec.name} ({mode}) failed: {run.error}")
            times[mode].append(run.wall_time_s)
            beta_s[mode].append(run.beta_time_s)
            first.setdefault(mode, run)
    same = all(first[m].val_accuracy == first["plain"].val_accuracy and
               first[m].train_loss == first["plain"].train_loss for m in TIMED)
    med = {m: float(np.median(v)) for m, v in times.items()}
    med_cpu = {m: float(np.median(v)) for m, v in cpu.items()}
    return {"wall_s": times, "cpu_s": cpu, "beta_s": beta_s, "median_wall_s": med, "median_cpu_s": med_cpu,
            **{f"overhead_{m}": med[m] / med["plain"] - 1 for m in TIMED[1:]},
            **{f"cpu_overhead_{m}": med_cpu[m] / med_cpu["plain"] - 1 for m in TIMED[1:]},
            **{f"beta_share_{m}": float(np.median(np.divide(beta_s[m], times[m]))) for m in TIMED[1:]},
            "identical_training": same, "images_per_s": first["plain"].images_per_s,
            "observations": len(first["plain"].epoch)}


def _roughness(b: np.ndarray) -> float:
    return float(np.std(np.diff(b)) / np.std(b)) if len(b) > 2 and np.std(b) > 0 else float("nan")


def _noise(args, spec, train, val) -> dict:
    """validation / fixed / window β_eff trajectories of one training run (observations after t0), each
    against the fixed-batch one."""
    runs = {m: fine_tune_candidate(spec, train, val, _recipe(args, args.noise_evals, m), progress=False)
            for m in NOISE}
    v, t0 = Recipe().variant, Recipe().t0
    b = {m: np.asarray(r.beta_eff[v][t0:]) for m, r in runs.items()}
    out = {"variant": v, "observations": len(runs["fixed"].epoch), "epoch": runs["fixed"].epoch,
           "val_accuracy": runs["fixed"].val_accuracy,
           "identical_training": all(r.val_accuracy == runs["fixed"].val_accuracy for r in runs.values())}
    for m, r in runs.items():
        p = predict_final_accuracy(r.beta_eff[v], r.val_accuracy, t0=t0, denominators=r.beta_denominator[v])
        out[m] = {"beta": r.beta_eff[v], "roughness": _roughness(b[m]), "prediction": p.to_dict(),
                  "spearman_vs_fixed": float(spearmanr(b[m], b["fixed"]).statistic),
                  "pearson_vs_fixed": float(pearsonr(b[m], b["fixed"]).statistic)}
    return out


def _markdown(out: dict, command: str) -> str:
    rows = out["candidates"]
    lines = ["# Cost of β_eff tracking, and which features β_eff is measured on", "",
             (f"Command: `{command}` ({out['machine']}; {out['data']}: {out['n_train']} train / {out['n_val']} val "
              f"images at {out['image_size']} px, batch {out['batch_size']}, {out['epochs']} epochs, "
              f"{out['evals_per_epoch']} observations per epoch (the default rate), β batch {out['beta_batch']}, "
              f"`{out['variant']}` variant; medians of {out['repeats']} alternating repeats; total {out['seconds']:.0f} s)."),
             "", ("| candidate | train img/s | CPU s plain / validation / fixed | CPU overhead validation | "
                  "CPU overhead fixed | wall overhead validation | wall overhead fixed | β share validation | "
                  "β share fixed | identical training |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        t = r["timed"]
        c = t["median_cpu_s"]
        lines.append(f"| {name} | {t['images_per_s']:.1f} | {c['plain']:.1f} / {c['validation']:.1f} / {c['fixed']:.1f} | "
                     f"{100 * t['cpu_overhead_validation']:+.1f} % | {100 * t['cpu_overhead_fixed']:+.1f} % | "
                     f"{100 * t['overhead_validation']:+.1f} % | {100 * t['overhead_fixed']:+.1f} % | "
                     f"{100 * t['beta_share_validation']:.2f} % | {100 * t['beta_share_fixed']:.2f} % | "
                     f"{'yes' if t['identical_training'] else 'NO'} |")
    lines += ["", ("CPU overhead = median CPU time of the process (time.process_time, one torch thread, data loading in the "
                   "process: --num-workers 0) / the plain run's − 1: the cost itself, little affected by the other "
                   "jobs on the machine. Wall overhead = the same with wall time (machine noise included: the machine "
                   "is shared). β share = the harness's own timer of β_eff work (β_eff on the probe; for fixed also "
                   "the backbone pass over the fixed batch) / wall time of the same run. plain = the same fine-tune "
                   "and validation passes with Recipe.track_beta=False."), "",
              f"## β_eff trajectories of one training run, three feature sources ({out['noise_evals']} observations per epoch)",
              "", ("| candidate | source | Spearman ρ vs fixed | Pearson r vs fixed | roughness | predicted acc | "
                   "last val acc |"), "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        n = r["noise"]
        for m in NOISE:
            p = n[m]["prediction"]
            lines.append(f"| {name} | {m} | {n[m]['spearman_vs_fixed']:.2f} | {n[m]['pearson_vs_fixed']:.2f} | "
                         f"{n[m]['roughness']:.2f} | {100 * p['accuracy']:.1f} ± {100 * p['std']:.1f} | "
                         f"{100 * n['val_accuracy'][-1]:.1f} |")
    lines += ["", (f"Observations after t0 = {out['t0']}. roughness = std of successive differences / std of the values "
                   "(≈ 1.41 for white noise, small for a smooth trend). The three runs train identically "
                   "(measuring consumes no random numbers); only the features β_eff is measured on differ.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default="efficientnet_lite0.in1k,mobilenetv2_100.tv_in1k")
    ap.add_argument("--data", default="elpv")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--evals-per-epoch", type=int, default=Recipe().evals_per_epoch)
    ap.add_argument("--noise-evals", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train, val = split_dataset(load_dataset(args.data), val_fraction=Recipe().val_fraction, seed=Recipe().seed)
    rows = {}
    for spec in resolve_candidates(args.candidates, progress=False):
        rows[spec.name] = {"timed": _timed(args, spec, train, val), "noise": _noise(args, spec, train, val)}
        print(spec.name, json.dumps(rows[spec.name]["timed"]["median_wall_s"]), flush=True)
    out = {"machine": f"{platform.machine()} CPU, torch threads {torch.get_num_threads()}", "data": args.data,
           "n_train": len(train), "n_val": len(val), "image_size": args.image_size, "epochs": args.epochs,
           "evals_per_epoch": args.evals_per_epoch, "noise_evals": args.noise_evals, "repeats": args.repeats,
           "batch_size": Recipe().batch_size, "beta_batch": Recipe().beta_batch_size, "variant": Recipe().variant,
           "t0": Recipe().t0, "candidates": rows, "seconds": time.perf_counter() - t0}
    command = "python -m ncap.bench.tracking_overhead " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking_overhead.json").write_text(json.dumps({"command": command.strip(), **out}, indent=1))
    (args.out / "tracking_overhead.md").write_text(_markdown(out, command.strip()))
    print(_markdown(out, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
