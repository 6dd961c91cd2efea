"""Memory guards of the ranking service, measured on a live server (127.0.0.1) with a 2 GB per-job limit.

    python -m ncap.service.measurements.memory_guard

1. Refused at submit: the issue's job (``resnet10t=random``, 1 epoch, ``probe_width`` 8192) is answered 400
   with the estimate, before anything is queued.
2. A wrong estimate fails cleanly: a 3-candidate job in which the middle candidate allocates 3 GB on top of
   its real fine-tuning (what a candidate whose estimate was too low does) runs under the limit
   (``RLIMIT_DATA``): that candidate ends ``failed: out of memory (limit 2.0 GB)``, the two others are
   ranked, and the training process's peak RSS and the host's lowest available memory during the job are
   recorded (the host is untouched when the peak stays near the limit).
3. The API process's peak memory while it checks a maximal upload (``max_upload_mb`` = 200): a 200 MB
   float32 ``.npz`` and a 200 MB ``.zip`` of PNG images, as the growth of the BentoML worker's ``VmHWM``.

The server's ranking function is :func:`guarded_runner` (real fine-tuning through ``models.harness``, plus
the 3 GB allocation for a candidate labelled ``oversized``). Writes bench/results/memory_guard.{md,json}.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from ncap.models.memory import available_memory

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"  # the repository's bench/results
LIMIT_GB = 2
SMALL = {"epochs": 1, "image_size": 32, "evals_per_epoch": 2}


def guarded_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, on_epoch=None,
                   should_stop=None, **_):
    """Real fine-tuning of each candidate (``models.harness``); a candidate labelled ``oversized`` first
    allocates 3 GB more than any estimate allowed for. Failures are recorded per candidate."""
    from ncap.models.data import load_dataset, split_dataset
    from ncap.models.harness import fine_tune_candidate
    from ncap.models.memory import candidate_failure
    from ncap.models.registry import resolve_candidates

    ds = load_dataset(dataset)
    train, val = split_dataset(ds, val_fraction=config.val_fraction, seed=config.seed)
    records = []
    for spec in resolve_candidates(candidates, progress=False):
        if spec.name in (completed or {}):
            records.append(completed[spec.name])
            continue
        try:
            if spec.name == "oversized":
                ballast = np.ones(3 * 1024**3 // 8)  # noqa: F841 - held while the candidate trains
            run = fine_tune_candidate(spec, train, val, config, progress=False, on_epoch=on_epoch,
                                      should_stop=should_stop)
            rec = {"candidate": spec.name, "status": run.status, "error": run.error,
                   "observed_accuracy": run.val_accuracy[-1] if run.val_accuracy else None}
        except (MemoryError, RuntimeError) as exc:
            rec = {"candidate": spec.name, "status": "failed", "error": candidate_failure(exc)}
        on_candidate_done(rec)
        records.append(rec)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return {"candidates": records, "config": config.to_dict(),
            "dataset": {"source": str(dataset), "n_images": len(ds), "n_train": len(train), "n_val": len(val),
                        "classes": ds.class_names}}


def _status(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{key}:")[1].split()[0]) * 1024


def wrong_estimate(srv) -> dict:
    """Part 2: the job with an 'oversized' candidate; the trainer's peak RSS and the host's lowest available
    memory are sampled every 0.2 s while it runs."""
    cands = ["first:resnet10t=random", "oversized:resnet10t=random", "last:mobilenetv3_small_050=random"]
    job = srv.submit({**SMALL, "candidates": cands}).json()["job_id"]
    peak, low, stop = [0], [available_memory()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            low[0] = min(low[0], available_memory())
            trainer = srv.roles().get("trainer")
            if trainer is not None:
                try:
                    peak[0] = max(peak[0], _status(trainer.pid, "VmHWM"))
                except (OSError, IndexError):
                    pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    final = srv.wait(job, timeout=1800, interval=1.0)
    stop.set()
    thread.join()
    return {"job": cands, "state": final["state"], "candidates": {c["name"]: [c["state"], c["error"]]
                                                                   for c in final["candidates"]},
            "trainer_peak_rss_bytes": peak[0], "host_min_available_bytes": low[0]}


def _png_zip(target_bytes: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        i = 0
        while buf.tell() < target_bytes:
            img = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(img, format="PNG")
            zf.writestr(f"data/{'ab'[i % 2]}/{i}.png", img.getvalue())
            i += 1
    return buf.getvalue()


def maximal_uploads(srv, tmp: Path) -> list[dict]:
    """Part 3: growth of the API worker's peak RSS while it checks each upload (one at a time)."""
    npz = tmp / "max.npz"
    n = 200 * 1024**2 // (64 * 64 * 4) - 10
    np.savez(npz, x=np.random.default_rng(0).random((n, 64, 64), dtype=np.float32), y=np.arange(n) % 10)
    rows = []
    for name, data in (("max.npz", npz.read_bytes()), ("max.zip", _png_zip(199 * 1024**2))):
        worker = srv.roles()["worker"]
        before = _status(worker.pid, "VmHWM")
        t0 = time.time()
        r = srv.submit({**SMALL, "candidates": ["resnet10t=random"]}, file=(name, data), timeout=900)
        rows.append({"upload": name, "bytes": len(data), "status": r.status_code, "seconds": round(time.time() - t0, 1),
                     "api_peak_growth_bytes": _status(worker.pid, "VmHWM") - before,
                     "api_peak_rss_bytes": _status(worker.pid, "VmHWM")})
        if r.status_code == 200:
            srv.post("/jobs/cancel", {"job_id": r.json()["job_id"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    from ncap.service.measurements.live_server import LiveServer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ncap-memguard-") as tmp:
        srv = LiveServer(Path(tmp), token="guard", runner="ncap.service.measurements.memory_guard:guarded_runner",
                         max_job_memory_gb=str(LIMIT_GB), max_upload_mb="201")
        srv.start()
        try:
            r = srv.submit({**SMALL, "candidates": ["resnet10t=random"], "probe_width": 8192})
            result = {"limit_gb": LIMIT_GB, "refused": {"status": r.status_code, "message": r.json().get("error")},
                      "uploads": maximal_uploads(srv, Path(tmp)), "wrong_estimate": wrong_estimate(srv)}
        finally:
            srv.stop()
    write(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_guard.json").write_text(json.dumps(result, indent=2))
    w = result["wrong_estimate"]
    gb = 1024**3
    lines = ["# Memory guards (per-job limit 2 GB)", "", ("Command: `python -m ncap.service.measurements.memory_guard` (a live "
             "server on 127.0.0.1, `NCAP_MAX_JOB_MEMORY_GB=2`)."), "",
             "## Refused at submit", "", (f"`probe_width` 8192: HTTP {result['refused']['status']}: "
             f"{result['refused']['message']}"), "", "## A wrong estimate fails cleanly", "",
             f"Job {w['job']} (the middle one allocates 3 GB on top of its estimate): state **{w['state']}**.", "",
             "| candidate | state | error |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {e or ''} |" for n, (s, e) in w["candidates"].items()]
    lines += ["", (f"Training process peak RSS {w['trainer_peak_rss_bytes'] / gb:.2f} GB (RLIMIT_DATA 2 GB counts its "
              "private memory; RSS adds shared libraries); host available memory never below "
              f"{w['host_min_available_bytes'] / gb:.1f} GB."), "",
              "## API process while checking a maximal upload (max_upload_mb 200)", "",
              "| upload | size MB | HTTP | seconds | API peak RSS growth MB | API peak RSS GB |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {u['upload']} | {u['bytes'] / 2**20:.0f} | {u['status']} | {u['seconds']} | "
              f"{u['api_peak_growth_bytes'] / 2**20:.0f} | {u['api_peak_rss_bytes'] / gb:.2f} |"
              for u in result["uploads"]]
    (out / "memory_guard.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
