"""Calibrate ``models.memory`` against measured memory, and record why the limit is ``RLIMIT_DATA``.

    python -m ncap.bench.memory_calibration [--quick]

Every measurement runs in a fresh process; its peak is the kernel's ``ru_maxrss`` for that process
(``os.wait4``), or the growth of ``VmHWM`` over a baseline taken right before the measured step.

1. Steps (each term of the estimate on its own): one training step (forward + backward) and one forward
   without gradients of a timm backbone at a batch and size, against ``ACTIVATION_FACTOR`` x the summed
   leaf outputs and ``NO_GRAD_FACTOR`` x the largest one; ``capacitance()`` of each variant on a probe,
   against ``beta_eff_bytes``.
2. Whole runs: a process doing what the service's training process does for one candidate (load the
   dataset, split it, build the candidate, ``harness.fine_tune_candidate`` for one epoch), against
   ``estimate_peak_memory``.
3. Limits: importing torch under a 2 GB ``RLIMIT_AS`` and under a 2 GB ``RLIMIT_DATA``, and what a 3 GB
   allocation past the latter raises.

Writes bench/results/memory_calibration.{md,json}. Re-run it whenever the harness, the data pipeline or
torch changes what they hold; the constants live in ``ncap.models.memory``. After changing only a constant,
``--estimates-only bench/results/memory_calibration.json`` recomputes the estimates of the stored
measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STEPS = [  # (arch, image side, batch)
    ("resnet10t", 64, 64), ("mobilenetv2_100", 128, 32), ("convnext_atto", 96, 32), ("resnet18", 224, 16),
    ("efficientnet_lite0", 160, 16), ("vit_tiny_patch16_224", 224, 16),
]
BETAS = [("default", 2048), ("support", 512), ("support", 1024), ("support", 2048), ("magnitude", 128)]
RUNS = [  # (name, candidate, dataset, recipe overrides)
    ("resnet10t digits 32px", "resnet10t=random", "digits", {"image_size": 32}),
    ("mobilenetv3 digits 64px", "mobilenetv3_small_050=random", "digits", {"image_size": 64}),
    ("resnet18 mnist5k 32px b128", "resnet18=random", "mnist5k", {"image_size": 32, "batch_size": 128}),
    ("resnet10t digits probe 1024", "resnet10t=random", "digits", {"image_size": 32, "probe_width": 1024}),
    ("resnet18 npz 64px frozen", "resnet18=random", "npz", {"image_size": 64, "trainable": "probe"}),
    ("efficientnet_lite0 npz native 224 b16", "efficientnet_lite0=random", "npz", {"batch_size": 16}),
]
QUICK = {"resnet10t digits 32px", "resnet10t digits probe 1024"}


# ---------------------------------------------------------------------------------- child processes
def _hwm() -> int:
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024


def _rss() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024


def child_step(arch: str, size: int, batch: int, mode: str) -> dict:
    import gc

    import timm
    import torch

    torch.set_num_threads(1)
    model = timm.create_model(arch, num_classes=0)
    head = torch.nn.Linear(model.num_features, 10)
    x = torch.randn(batch, 3, size, size)
    gc.collect()
    before = _rss()
    if mode == "train":
        model.train()
        head(model(x)).sum().backward()
        grads = 4 * sum(p.numel() for p in model.parameters())  # .grad tensors: counted in 'weights'
    else:
        model.eval()
        with torch.no_grad():
            model(x)
        grads = 0
    return {"delta": _hwm() - before - grads}


def child_beta(variant: str, width: int) -> dict:
    import gc

    import torch

    from ncap.capacitance.beta_eff import capacitance
    from ncap.capacitance.probe import NeuralCapacitanceProbe, probe_width_spec

    torch.set_num_threads(1)
    probe = NeuralCapacitanceProbe(512, 10, probe_width_spec(width, 3))
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    gc.collect()
    before = _rss()
    capacitance(probe, x, y, variant=variant, max_magnitude_flops=1e13)
    return {"delta": _hwm() - before}


def child_run(config: dict) -> dict:
    import torch

    from ncap.models.data import load_dataset, split_dataset
    from ncap.models.harness import fine_tune_candidate
    from ncap.models.recipe import Recipe
    from ncap.models.registry import resolve_candidates

    torch.set_num_threads(1)
    import matplotlib.pyplot  # noqa: F401  (the training process imports it for the plots)

    recipe = Recipe(epochs=1, evals_per_epoch=1, device="cpu", **config["recipe"])
    ds = load_dataset(config["dataset"])
    train, val = split_dataset(ds, val_fraction=recipe.val_fraction, seed=recipe.seed)
    (spec,) = resolve_candidates([config["candidate"]], progress=False)
    run = fine_tune_candidate(spec, train, val, recipe, progress=False)
    return {"status": run.status, "error": run.error}


def child_limit(kind: str) -> dict:
    import resource

    limit = 2 * 1024**3
    resource.setrlimit({"AS": resource.RLIMIT_AS, "DATA": resource.RLIMIT_DATA}[kind], (limit, limit))
    try:
        import timm
        import torch

        torch.set_num_threads(1)
        model = timm.create_model("resnet10t", num_classes=0)
        model(torch.randn(8, 3, 32, 32)).sum().backward()
    except Exception as exc:  # noqa: BLE001 - what happens is the measurement
        return {"import_and_step": f"fails: {type(exc).__name__}: {str(exc)[:120]}"}
    try:
        torch.empty(3 * 1024**3 // 4).fill_(1)
        alloc = "a 3 GB tensor was allocated"
    except RuntimeError as exc:
        alloc = f"RuntimeError: {str(exc)[:160]}"
    return {"import_and_step": "ok", "alloc_3gb": alloc}


def _spawn(args: list[str]) -> tuple[dict, int, float]:
    """(child's JSON answer, its peak RSS bytes, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ncap.bench.memory_calibration", "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"calibration child {args} failed: {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss * 1024, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------- estimates
def step_estimate(arch: str, size: int, batch: int, mode: str) -> int:
    from ncap.models.memory import ACTIVATION_FACTOR, NO_GRAD_FACTOR, backbone_profile

    prof = backbone_profile(arch, {}, size)
    if mode == "train":
        return int(ACTIVATION_FACTOR * batch * prof.activation_bytes)
    return int(NO_GRAD_FACTOR * batch * prof.largest_output_bytes)


def beta_estimate(variant: str, width: int) -> int:
    from ncap.capacitance.probe import probe_width_spec
    from ncap.models.memory import beta_eff_bytes

    return beta_eff_bytes(variant, [512, *probe_width_spec(width, 3), 10], 256)


def run_estimate(cand: str, dataset: str, recipe: dict):
    from ncap.models.memory import DatasetShape, estimate_peak_memory, named_dataset_shape
    from ncap.models.recipe import Recipe

    data = DatasetShape(3000, (3, 64, 64), 10) if dataset == "npz" else named_dataset_shape(dataset)
    return estimate_peak_memory([cand], Recipe(epochs=1, evals_per_epoch=1, device="cpu", **recipe), data)


def step_rows(quick: bool) -> list[dict]:
    rows = []
    for arch, size, batch in STEPS[:2] if quick else STEPS:
        for mode in ("train", "eval"):
            got, _peak, _wall = _spawn(["step", json.dumps([arch, size, batch, mode])])
            rows.append({"what": f"{arch} {size}px b{batch} {mode}", "config": [arch, size, batch, mode],
                         "measured": got["delta"], "estimated": step_estimate(arch, size, batch, mode)})
    return rows


def beta_rows(quick: bool) -> list[dict]:
    rows = []
    for variant, width in BETAS[:2] if quick else BETAS:
        got, _peak, _wall = _spawn(["beta", json.dumps([variant, width])])
        rows.append({"what": f"beta_eff {variant} probe {width} B=256", "config": [variant, width],
                     "measured": got["delta"], "estimated": beta_estimate(variant, width)})
    return rows


def run_rows(quick: bool, npz: Path) -> list[dict]:
    rows = []
    for name, cand, dataset, recipe in RUNS:
        if quick and name not in QUICK:
            continue
        config = {"candidate": cand, "dataset": str(npz) if dataset == "npz" else dataset, "recipe": recipe}
        got, peak, wall = _spawn(["run", json.dumps(config)])
        est = run_estimate(cand, dataset, recipe)
        rows.append({"what": name, "config": [cand, dataset, recipe], "measured": peak, "estimated": est.total,
                     "parts": est.parts, "wall_s": round(wall), "run": got})
    return rows


def recompute(result: dict) -> dict:
    """The estimates (and ratios) of stored measurements, with the constants as they are now (the
    measurements do not depend on them). Rows written before ``config`` was stored are matched to the
    configuration lists by position (a full run measures them in order)."""
    steps = [[a, s, b, m] for a, s, b in STEPS for m in ("train", "eval")]
    for section, configs, fn in (("steps", steps, step_estimate), ("beta", [list(b) for b in BETAS], beta_estimate),
                                 ("runs", [[c, d, r] for _n, c, d, r in RUNS], None)):
        for row, default in zip(result[section], configs):
            config = row.setdefault("config", default)
            if fn is not None:
                row["estimated"] = fn(*config)
            else:
                est = run_estimate(*config)
                row["estimated"], row["parts"] = est.total, est.parts
    return result


def _synthetic_npz(folder: Path) -> Path:
    import numpy as np

    path = folder / "synthetic.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (3000, 64, 64, 3), dtype=np.uint8), y=np.arange(3000) % 10)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few measurements of each kind")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--estimates-only", type=Path, default=None, metavar="JSON",
                   help="recompute the estimates of a stored memory_calibration.json (after changing a constant)")
    args = p.parse_args(argv)
    if args.child is not None:
        kind, payload = args.child[0], json.loads(args.child[1])
        fn = {"step": child_step, "beta": child_beta, "run": child_run, "limit": child_limit}[kind]
        print(json.dumps(fn(*payload) if isinstance(payload, list) else fn(payload)))
        return 0
    if args.estimates_only is not None:
        result = recompute(json.loads(args.estimates_only.read_text()))
    else:
        result = {"steps": step_rows(args.quick), "beta": beta_rows(args.quick)}
        with tempfile.TemporaryDirectory(prefix="ncap-memcal-") as tmp:
            result["runs"] = run_rows(args.quick, _synthetic_npz(Path(tmp)))
        result["limits"] = {kind: _spawn(["limit", json.dumps(kind)])[0] for kind in ("AS", "DATA")}
    for section in ("steps", "beta", "runs"):
        for row in result[section]:
            row["ratio"] = row["estimated"] / max(row["measured"], 1)
            print(f"{row['what']:48s} measured {row['measured'] / 2**20:8.0f} MB  estimated "
                  f"{row['estimated'] / 2**20:8.0f} MB  ratio {row['ratio']:5.2f}", flush=True)
    write(result, args)
    return 0


def write(result: dict, args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m ncap.bench.memory_calibration" + (" --quick" if args.quick else "")
    if args.estimates_only is not None:
        cmd += "`, then the estimates recomputed from its measurements with `--estimates-only"
    result = {k: v for k, v in result.items() if k not in ("command", "machine")}
    meta = {"command": cmd, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads 1"}
    (args.out / "memory_calibration.json").write_text(json.dumps({**meta, **result}, indent=2))
    lines = ["# Memory: estimate vs measured", "", (f"Command: `{cmd}` ({meta['machine']}); each measurement in a "
             "fresh process. Steps and beta_eff: growth of the peak RSS over the step; runs: peak RSS of a process "
             "doing what the training process does for one candidate (1 epoch, DataLoader with the recipe's "
             "workers; the workers' own RSS is not in this figure)."), ""]
    for title, section in (("Steps (activations)", "steps"), ("beta_eff", "beta"), ("Whole runs", "runs")):
        rows = result[section]
        ratios = [r["ratio"] for r in rows]
        lines += [f"## {title}: estimate / measured in [{min(ratios):.2f}, {max(ratios):.2f}]", "",
                  "| what | measured MB | estimated MB | estimate / measured |", "|---|---:|---:|---:|"]
        lines += [f"| {r['what']} | {r['measured'] / 2**20:.0f} | {r['estimated'] / 2**20:.0f} | {r['ratio']:.2f} |"
                  for r in rows]
        lines.append("")
    lines += ["## Limits (2 GB)", "", "| limit | import torch + timm, one step | 3 GB allocation |", "|---|---|---|"]
    for kind, got in result["limits"].items():
        lines.append(f"| RLIMIT_{kind} | {got['import_and_step']} | {got.get('alloc_3gb', '—')} |")
    (args.out / "memory_calibration.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
