"""Load test of the ranking service: many concurrent clients poll job status while a job trains.

    python -m ncap.service.measurements.service_load                     # start a server, 50 clients, 60 s, write results
    python -m ncap.service.measurements.service_load --clients 100 --interval 0
    python -m ncap.service.measurements.service_load --url http://127.0.0.1:3000 --token $NCAP_TOKEN   # an existing server

Each client is its own HTTP connection (httpx.AsyncClient) that POSTs /jobs/status in a loop, sleeping
``--interval`` seconds between requests (0 = back to back). A request counts as an error if it raises
(connect/read timeout, reset) or does not return 200 with the job's state. The job (real training on the
embedded digits data) must still be running when the window closes, otherwise the run is flagged.
Results go to bench/results/service_load.{json,md} (``--out`` to change).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ["resnet10t=random", "mobilenetv3_small_050=random", "resnet18=random"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCAP_") or k == "NCAP_CACHE"}
    env.update(HF_HUB_OFFLINE="1", BENTOML_HOME=str(tmp / "bentoml_home"), BENTOML_DO_NOT_TRACK="true",
               NCAP_TOKEN=token)
    log = open(tmp / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "ncap.service.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--data-dir", str(tmp / "data")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {tmp / 'server.log'}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server not ready after 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs[:1]:
        p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


async def poll_client(url: str, headers: dict, job_id: str, ready: asyncio.Barrier, interval: float,
                      timeout: float, out: dict, window: dict) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout,
                                 limits=httpx.Limits(max_connections=1)) as client:
        # warm-up: open the connection and make one request before the measured window
        t0 = time.perf_counter()
        try:
            r = await client.post("/jobs/status", json={"job_id": job_id})
            if r.status_code != 200:
                out["warmup_errors"].append(f"HTTP {r.status_code}")
        except httpx.HTTPError as exc:
            out["warmup_errors"].append(f"{type(exc).__name__}: {exc}"[:160])
        out["warmup"] = time.perf_counter() - t0
        await ready.wait()
        stop_at = window["stop_at"]
        if interval > 0:  # independent clients: each polls at its own phase, not in lock-step bursts
            await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                r = await client.post("/jobs/status", json={"job_id": job_id})
                ok = r.status_code == 200 and r.json().get("job_id") == job_id
                if not ok:
                    out["errors"].append(f"HTTP {r.status_code}: {r.text[:120]}")
            except (httpx.HTTPError, ValueError) as exc:
                ok = False
                out["errors"].append(f"{type(exc).__name__}: {exc}"[:160])
            dt = time.perf_counter() - t0
            if ok:
                out["lat"].append(dt)
            out["n"] += 1
            if interval > 0:
                await asyncio.sleep(max(0.0, interval - dt))


async def watch_job(url: str, headers: dict, job_id: str, stop_at: float, samples: list) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        while time.perf_counter() < stop_at:
            r = await client.post("/jobs/status", json={"job_id": job_id})
            if r.status_code == 200:
                s = r.json()
                samples.append({"t": time.time(), "state": s["state"], **s["progress"]})
            await asyncio.sleep(2.0)


async def run_load(url: str, token: str, job_id: str, clients: int, duration: float, interval: float,
                   timeout: float) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    per_client = [{"lat": [], "errors": [], "warmup_errors": [], "n": 0, "warmup": None} for _ in range(clients)]
    window: dict = {}

    def open_window() -> None:  # runs once every client is connected
        window["start"] = time.perf_counter()
        window["stop_at"] = window["start"] + duration

    ready = asyncio.Barrier(clients + 1)
    progress: list = []
    load_before = os.getloadavg()

    async def coordinator() -> None:
        await asyncio.sleep(0)
        open_window()
        await ready.wait()
        await watch_job(url, headers, job_id, window["stop_at"], progress)

    # clients connect, then wait at the barrier; the coordinator opens the window when all are there
    tasks = [asyncio.create_task(poll_client(url, headers, job_id, ready, interval, timeout, pc, window))
             for pc in per_client]
    while sum(pc["warmup"] is not None for pc in per_client) < clients:
        await asyncio.sleep(0.05)
    await coordinator()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - window["start"]
    lat = sorted(x for pc in per_client for x in pc["lat"])
    errors = [e for pc in per_client for e in pc["errors"]]
    warm_errors = [e for pc in per_client for e in pc["warmup_errors"]]
    n = sum(pc["n"] for pc in per_client)
    warm = sorted(pc["warmup"] for pc in per_client)
    return {
        "clients": clients, "duration_s": round(elapsed, 2), "interval_s": interval, "requests": n,
        "ok": len(lat), "errors": len(errors), "error_examples": sorted(set(errors))[:5],
        "throughput_rps": round(n / elapsed, 1),
        "latency_ms": {"p50": round(1000 * percentile(lat, 0.50), 2), "p90": round(1000 * percentile(lat, 0.90), 2),
                       "p99": round(1000 * percentile(lat, 0.99), 2), "max": round(1000 * lat[-1], 2) if lat else None,
                       "mean": round(1000 * statistics.fmean(lat), 2) if lat else None},
        "min_requests_per_client": min(pc["n"] for pc in per_client),
        "warmup": {"errors": len(warm_errors), "connect_and_first_request_ms_max": round(1000 * warm[-1], 1),
                   "connect_and_first_request_ms_p50": round(1000 * percentile(warm, 0.5), 1)},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "job_progress": progress,
    }


def submit_job(url: str, token: str, epochs: int) -> str:
    r = httpx.post(url + "/jobs/submit", json={"config": {"candidates": CANDIDATES, "epochs": epochs}},
                   headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=60)
    r.raise_for_status()
    return r.json()["job_id"]


def wait_running(url: str, token: str, job_id: str, timeout: float = 120) -> None:
    """Until the trainer has reported its first epoch (training is really under way)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = httpx.post(url + "/jobs/status", json={"job_id": job_id}, headers=headers, timeout=30).json()
        if s["state"] == "running" and s["progress"]["epoch"] is not None:
            return
        if s["state"] in ("done", "failed", "cancelled"):
            raise SystemExit(f"job ended before the load test: {s['state']} {s.get('error')}")
        time.sleep(0.5)
    raise SystemExit("job did not start training")


def to_markdown(runs: list[dict], meta: dict) -> str:
    lines = ["# Service load test: concurrent status polling while a job trains", "",
             (f"`python -m ncap.service.measurements.service_load` on {meta['machine']}; {meta['cpus']} CPU cores shared by the server, "
             "the training process and the load generator (all on loopback). Server: `ncap serve` "
             "(BentoML 1.4.39, 1 worker process, 16 API threads); the job trains "
             f"{', '.join(CANDIDATES)} on the embedded digits data in its own process (1 torch thread, nice 10)."), "",
             ("| clients | poll interval | duration | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms "
             "| job state at end | training progress in window | load avg (1 min) before → after |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in runs:
        prog = r["job_progress"]
        first, last = (prog[0], prog[-1]) if prog else ({}, {})
        moved = (f"{first.get('fraction', 0):.0%} → {last.get('fraction', 0):.0%} "
                 f"({last.get('candidates_done', 0)} candidates done)") if prog else "n/a"
        L = r["latency_ms"]
        lines.append(f"| {r['clients']} | {r['interval_s']:g} s | {r['duration_s']:.0f} s | {r['requests']} | "
                     f"{r['errors']} | {r['throughput_rps']} | {L['p50']} | {L['p90']} | {L['p99']} | {L['max']} | "
                     f"{last.get('state', '?')} | {moved} | {r['loadavg_before'][0]} → {r['loadavg_after'][0]} |")
    lines += ["", "Errors: " + ("none" if all(r["errors"] == 0 for r in runs) else
                                "; ".join(e for r in runs for e in r["error_examples"])), "",
              "An error is any request that raised (timeout, reset) or did not return 200 with the job. "
              "Latency is measured in the client, per request, from send to parsed response. Every client opens "
              "its own connection and makes one warm-up request before the window opens (the 50 simultaneous "
              "connects take up to "
              + ", ".join(f"{r['warmup']['connect_and_first_request_ms_max']:.0f} ms" for r in runs)
              + f"; warm-up errors: {sum(r['warmup']['errors'] for r in runs)}). The load average shows how "
              "busy the shared machine was (other work ran on it too).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.service.measurements.service_load", description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[50])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--interval", type=float, nargs="+", default=[0.25],
                    help="seconds between one client's requests (0 = back to back); one run per value")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (counts as an error)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--url", default=None, help="use this running server instead of starting one")
    ap.add_argument("--token", default=os.environ.get("NCAP_TOKEN", ""))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_load")
    args = ap.parse_args(argv)

    tmp_ctx = tempfile.TemporaryDirectory(prefix="ncap-load-")
    tmp = Path(tmp_ctx.name)
    proc = None
    token = args.token or ("load-" + os.urandom(8).hex())
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            proc, url = start_server(tmp, token)
        runs = []
        for clients in args.clients:
            for interval in args.interval:
                job_id = submit_job(url, token, args.epochs)
                wait_running(url, token, job_id)
                res = asyncio.run(run_load(url, token, job_id, clients, args.duration, interval, args.timeout))
                res["job_id"] = job_id
                runs.append(res)
                print(f"{clients} clients, interval {interval:g} s: {res['requests']} requests, "
                      f"{res['errors']} errors, p50 {res['latency_ms']['p50']} ms, p99 {res['latency_ms']['p99']} ms, "
                      f"job {res['job_progress'][-1]['state'] if res['job_progress'] else '?'}", flush=True)
                httpx.post(url + "/jobs/cancel", json={"job_id": job_id},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        meta = {"machine": f"{platform.machine()} {platform.system()}", "cpus": os.cpu_count(),
                "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "url": "loopback"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
        args.out.with_suffix(".md").write_text(to_markdown(runs, meta))
        print(f"wrote {args.out.with_suffix('.md')} and .json")
        ok = all(r["errors"] == 0 for r in runs)
        running = all(r["job_progress"] and r["job_progress"][-1]["state"] == "running" for r in runs)
        if not running:
            print("warning: the job was not running for the whole window; raise --epochs", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if proc is not None:
            stop_server(proc)
        tmp_ctx.cleanup()


if __name__ == "__main__":
    sys.exit(main())
