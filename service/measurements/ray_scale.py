"""Ray scale-out benchmark (issue 12): candidates per hour of the same small ranking job with the local
executor and with Ray at 1 and 2 workers, the per-task overhead, the driver's progress-event rate, and a
throughput model against cluster size.

    python -m ncap.service.measurements.ray_scale [--candidates 4] [--rounds 2] [--out bench/results/ray_scale]

The job: ``--candidates`` labelled copies of ``resnet10t=random`` on a 600-image digits subset (an in-memory
``.npz``: shipped through the object store), 32 px, 1 epoch, 2 observations. Every configuration runs in
the same process, one after another within a round, and the rounds alternate their order, so that the
load other processes put on the machine hits all of them alike; medians over rounds are reported, and the
ratios to the local executor are the numbers to read. The local executor runs with one torch thread, as each
Ray task does (one CPU per candidate). A Ray configuration starts a private local Ray on 127.0.0.1 with
``num_cpus`` = workers (timed apart: ``start_s``), runs the job twice: ``cold`` (worker processes start and
import torch) and ``warm`` (idle workers are reused), then shuts Ray down.

It measures the service layer's executors, so it lives in that layer (``ncap.service.measurements``) and imports
them plainly.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ncap.service.executors import RayExecutor
from ncap.service.ranking import run_ranking

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"  # the repository's bench/results
RECIPE = {"epochs": 1, "image_size": 32, "evals_per_epoch": 2, "batch_size": 64, "beta_batch_size": 64,
          "probe_width": 32, "num_workers": 0, "measure_latency": False, "seed": 0}
MODEL_GPUS = (8, 64, 512)


def make_job(folder: Path, n_candidates: int) -> tuple[str, list[str]]:
    """(dataset path, candidate entries) of the benchmark job."""
    from ncap.models.data import load_dataset

    ds = load_dataset("digits")
    keep = np.flatnonzero(np.arange(len(ds.y)) % 3 == 0)
    path = folder / "digits600.npz"
    np.savez_compressed(path, x=ds.x[keep], y=ds.y[keep])
    return str(path), [f"c{i}:resnet10t=random" for i in range(n_candidates)]


def time_job(data: str, candidates: list[str], executor=None) -> float:
    from ncap.models.recipe import Recipe

    t0 = time.perf_counter()
    doc = run_ranking(data, candidates, Recipe(**RECIPE), None, progress=False,
                                         executor=executor)
    assert all(r.status == "ok" for r in doc.candidates), [r.error for r in doc.candidates]
    return time.perf_counter() - t0


def time_local(data: str, candidates: list[str]) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one CPU per candidate, as a Ray task gets
    try:
        return {"job_s": time_job(data, candidates)}
    finally:
        torch.set_num_threads(threads)


def time_ray(data: str, candidates: list[str], workers: int) -> dict:
    """Start a private Ray with ``workers`` CPUs, run the job cold then warm, measure the event rate."""
    temp_dir = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    executor = RayExecutor(local_cpus=workers, temp_dir=temp_dir)
    t0 = time.perf_counter()
    executor.connect()
    start = time.perf_counter() - t0
    try:
        cold = time_job(data, candidates, executor)
        warm = time_job(data, candidates, executor)
        rate, roundtrip = (event_rate(), task_roundtrip()) if workers == 1 else (None, None)
    finally:
        executor.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return {"start_s": start, "cold_s": cold, "job_s": warm, "events_per_s": rate, "roundtrip_s": roundtrip}


def task_roundtrip(n: int = 50) -> float:
    """Median seconds to submit a no-op one-CPU task and get its result from a warm worker: Ray's own
    scheduling and RPC cost per task, without training, imports or data."""
    import ray

    @ray.remote(num_cpus=1)
    def noop() -> None:
        return None

    ray.get(noop.remote())
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def event_rate(n: int = 300) -> float:
    """Progress events per second through a driver-pinned Ray queue (what the Ray executor uses): one task
    puts ``n`` events, one blocking put each, while the driver drains them."""
    import ray
    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})

    @ray.remote(num_cpus=1)
    def produce(q, k: int) -> None:
        for i in range(k):
            q.put(("epoch", "c", float(i), {"val_accuracy": 0.5}))

    ray.get(produce.remote(queue, 10))  # warm the worker
    queue.get_nowait_batch(queue.qsize())
    t0 = time.perf_counter()
    ref, got = produce.remote(queue, n), 0
    while got < n:
        size = queue.qsize()
        got += len(queue.get_nowait_batch(size)) if size else 0
    ray.get(ref)
    rate = n / (time.perf_counter() - t0)
    queue.shutdown(force=True)
    return rate


def measure(n_candidates: int, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"local": [], "ray-1": [], "ray-2": []}
    with tempfile.TemporaryDirectory() as tmp:
        data, candidates = make_job(Path(tmp), n_candidates)
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                row = time_local(data, candidates) if name == "local" else time_ray(data, candidates, int(name[-1]))
                runs[name].append(row)
                print(f"round {r}: {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if v), flush=True)
    return runs


def summarise(runs: dict[str, list[dict]], n: int) -> dict:
    """Medians over rounds, candidates/hour, ratios to the local executor, per-task overheads."""
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    local = med("local", "job_s")
    table = {}
    for name in runs:
        job = med(name, "job_s")
        row = {"job_s": job, "candidates_per_hour": n * 3600 / job, "throughput_vs_local": local / job}
        if name != "local":
            row.update(start_s=med(name, "start_s"), cold_s=med(name, "cold_s"),
                       cold_candidates_per_hour=n * 3600 / med(name, "cold_s"))
        table[name] = row
    return {"configs": table, "overhead_per_task_warm_s": (med("ray-1", "job_s") - local) / n,
            "overhead_per_task_cold_s": (med("ray-1", "cold_s") - local) / n,
            "events_per_s": statistics.median(r["events_per_s"] for r in runs["ray-1"]),
            "noop_task_roundtrip_s": statistics.median(r["roundtrip_s"] for r in runs["ray-1"]),
            "speedup_2_vs_1_workers": med("ray-1", "job_s") / med("ray-2", "job_s")}


#: Assumptions of the throughput model (see docs/ray.md); the measured parts come from summarise().
ASSUMPTIONS = {
    "t_candidate_s": 120.0,  # one candidate's fine-tune on one GPU (a few epochs of a mid-size model)
    "cuda_init_s": 3.0,  # per task on a GPU worker, on top of the measured cold overhead
    "events_per_candidate": 3 * 2 + 2,  # 3 epochs x 2 observations + start + done
    "dataset_gb": 1.0,  # an in-memory dataset shipped through the object store
    "node_gb_per_s": 1.25,  # 10 GbE
    "gpus_per_node": 8,
}


def throughput_model(gpus: int, overhead_s: float, events_per_s: float, a: dict = ASSUMPTIONS) -> dict:
    """Candidates/hour of a cluster with ``gpus`` GPUs running at least as many (dataset, candidate) pairs:
    the GPUs' rate, the driver's progress-event rate, the one-off dataset shipping time, and which binds."""
    nodes = -(-gpus // a["gpus_per_node"])
    gpu_rate = gpus * 3600 / (a["t_candidate_s"] + overhead_s + a["cuda_init_s"])
    driver_rate = events_per_s * 3600 / a["events_per_candidate"]
    shipping_s = nodes * a["dataset_gb"] / a["node_gb_per_s"]  # worst case: every node pulls from the head
    return {"gpus": gpus, "nodes": nodes, "gpu_bound_per_hour": gpu_rate, "driver_bound_per_hour": driver_rate,
            "candidates_per_hour": min(gpu_rate, driver_rate), "shipping_s": shipping_s,
            "shipping_vs_candidate": shipping_s / a["t_candidate_s"],
            "binds": "GPUs" if gpu_rate <= driver_rate else "driver (progress events)"}


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    s, lines = result["summary"], []
    lines += [f"# Ray scale-out on this machine ({result['machine']})", "", f"Command: `{result['command']}`", "",
              result["job"], "", "| executor | job (s) | candidates/h | vs local | cold job (s) | Ray start (s) |",
              "|---|---|---|---|---|---|"]
    for name, row in s["configs"].items():
        cold = f"{row['cold_s']:.1f}" if "cold_s" in row else "—"
        start = f"{row['start_s']:.1f}" if "start_s" in row else "—"
        lines.append(f"| {name} | {row['job_s']:.1f} | {row['candidates_per_hour']:.0f} | "
                     f"{row['throughput_vs_local']:.2f} | {cold} | {start} |")
    lines += ["", (f"Per-task overhead of Ray over the local executor: {s['overhead_per_task_warm_s']:.2f} s warm "
              f"(workers reused), {s['overhead_per_task_cold_s']:.2f} s cold (worker start + imports); a no-op "
               f"task's round trip: {1000 * s['noop_task_roundtrip_s']:.1f} ms. "
              f"2 workers vs 1: {s['speedup_2_vs_1_workers']:.2f}x. Driver progress events: "
              f"{s['events_per_s']:.0f}/s."), "", "## Throughput model", "",
              "Assumptions: " + ", ".join(f"{k} = {v}" for k, v in result["assumptions"].items()) + "; overhead per "
              "task = the cold overhead measured above.", "",
              "| GPUs | nodes | GPU-bound cand./h | driver-bound cand./h | dataset shipping (s) | binds first |",
              "|---|---|---|---|---|---|"]
    for m in result["model"]:
        lines.append(f"| {m['gpus']} | {m['nodes']} | {m['gpu_bound_per_hour']:.0f} | {m['driver_bound_per_hour']:.0f} | "
                     f"{m['shipping_s']:.1f} | {m['binds']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncap.service.measurements.ray_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "ray_scale")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runs = measure(args.candidates, args.rounds)
    summary = summarise(runs, args.candidates)
    overhead = max(summary["overhead_per_task_cold_s"], 0.0)
    result = {"command": f"python -m ncap.service.measurements.ray_scale --candidates {args.candidates} --rounds {args.rounds}",
              "machine": f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end",
              "job": f"{args.candidates} x resnet10t=random on 600 digits images, recipe {RECIPE}",
              "runs": runs, "summary": summary, "assumptions": ASSUMPTIONS,
              "model": [throughput_model(g, overhead, summary["events_per_s"]) for g in MODEL_GPUS]}
    write(result, args.out)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
