"""Chaos runs of the ranking service: kill -9 one process at a random moment of a 3-candidate job, restart what
needs restarting, and check that the job finishes without retraining a finished candidate.

    python -m ncap.service.measurements.chaos [--runs 30] [--seed 0] [--runner ncap.service.ranking:run_ranking]

Runs share one ``ncap serve`` on 127.0.0.1 (and its data dir). Each run submits a 3-candidate job (three
labelled copies of a small random-init model on the embedded digits data, 1 epoch, 32 px), waits a random
time into the job, and SIGKILLs one process, in turn: the server's main process, the BentoML worker (API +
job worker) or the training process. When the killed process takes the server down (or BentoML does not replace its
worker within 60 s) the server is started again on the same data dir. Then the run checks, from the job
store (SQLite file, read directly):

* the job finishes (state done) within the time limit;
* no finished candidate is retrained: its ``finished_at`` and record are those it had at the kill, and no
  ``epoch`` event of it is logged after the kill;
* ``PRAGMA integrity_check`` says ok.

Results go to bench/results/chaos.{json,md}, one row per run.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx

from ncap.service.measurements.live_server import LiveServer

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"  # the repository's bench/results
ROLES = ("server", "worker", "trainer")
CANDIDATES = ["a:resnet10t=random", "b:resnet10t=random", "c:resnet10t=random"]
CONFIG = {"candidates": CANDIDATES, "epochs": 1, "image_size": 32, "evals_per_epoch": 2, "batch_size": 64}


def slow_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, on_epoch=None,
                should_stop=None, **_):
    """A ranking function that trains nothing but takes time: 4 observations of 0.4 s per candidate, each
    reported like real training (for the chaos test in the suite)."""
    records = []
    for name in [c.split(":")[0] for c in candidates]:
        if name in (completed or {}):
            records.append({**completed[name], "reused": True})
            continue
        for k in range(1, 5):
            time.sleep(0.4)
            if should_stop is not None and should_stop():
                raise RuntimeError("cancelled")
            on_epoch(name, k / 4, {"val_accuracy": 0.1 * k})
        rec = {"candidate": name, "status": "ok", "predicted_accuracy": 0.5, "predicted_std": 0.1}
        on_candidate_done(rec)
        records.append(rec)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return {"candidates": records, "config": config.to_dict(),
            "dataset": {"source": str(dataset), "n_images": 0, "n_train": 0, "n_val": 0, "classes": []}}


def _rows(db: Path, sql: str, args=()) -> list[dict]:
    conn = sqlite3.connect(str(db), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def _wait_ready(srv: LiveServer, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if srv.healthy():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def kill_during_job(srv: LiveServer, rng: random.Random, role: str, *, max_delay: float = 40.0,
                    job_timeout: float = 600.0, config: dict | None = None) -> dict:
    """Submit a job to the running ``srv``, SIGKILL its ``role`` process at a random moment, restart the
    server if it went down, wait for the job and check it (see the module docstring); returns the row."""
    row: dict = {"role": role}
    job = srv.submit(config or CONFIG).json()["job_id"]
    srv.wait(job, lambda s: s["state"] == "running" and s["progress"]["epoch"] is not None, timeout=300,
             interval=0.2)
    started = time.time()
    time.sleep(rng.uniform(0.0, max_delay))
    target = srv.roles().get(role)
    row["killed"] = f"{role} pid {target.pid}" if target is not None else "nothing (no such process then)"
    db = srv.data_dir / "jobs.db"
    before = {r["name"]: r for r in _rows(db, "SELECT * FROM candidates WHERE job_id = ?", (job,))}
    killed_at = time.time()
    if target is not None:
        target.kill()
    row["at_s"] = round(killed_at - started, 1)
    row["done_before_kill"] = sorted(n for n, r in before.items() if r["state"] == "done")
    row["restarted"] = role == "server" or not _wait_ready(srv, 60)
    if row["restarted"]:
        srv.kill9(whole_tree=True, settle=20)
        srv.start()
    final = srv.wait(job, timeout=job_timeout, interval=1.0)
    row.update(state=final["state"], attempts=final["attempts"])
    after = {r["name"]: r for r in _rows(db, "SELECT * FROM candidates WHERE job_id = ?", (job,))}
    late = {e["candidate"] for e in _rows(db, "SELECT candidate FROM events WHERE job_id = ? AND kind = 'epoch' "
                                              "AND ts > ?", (job, killed_at))}
    row["retrained"] = sorted(n for n in row["done_before_kill"]
                              if n in late or (after[n]["finished_at"], after[n]["record"])
                              != (before[n]["finished_at"], before[n]["record"]))
    row["candidates"] = {n: r["state"] for n, r in after.items()}
    row["integrity"] = _rows(db, "PRAGMA integrity_check")[0]["integrity_check"]
    row["ok"] = row["state"] == "done" and not row["retrained"] and row["integrity"] == "ok"
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runner", default=None, help="the service's ranking function (default: the real one)")
    p.add_argument("--max-delay", type=float, default=40.0, help="kill at a uniform time in [0, this] s after the "
                   "first observation")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ncap-chaos-") as tmp:
        srv = LiveServer(Path(tmp), token="chaos", **({"runner": args.runner} if args.runner else {}))
        srv.start()
        try:
            for i in range(args.runs):  # one data dir and one server, restarted whenever a kill takes it down
                try:
                    row = kill_during_job(srv, rng, ROLES[i % len(ROLES)], max_delay=args.max_delay)
                except Exception as exc:  # noqa: BLE001 - a run that breaks is a failed run, with its reason
                    row = {"role": ROLES[i % len(ROLES)], "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
                    srv.stop()
                    srv.start()
                rows.append({"run": i + 1, **row})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            srv.stop()
    write(rows, time.time() - t0, args)
    return 0 if all(r["ok"] for r in rows) else 1


def write(rows: list[dict], wall: float, args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    ok = sum(r["ok"] for r in rows)
    cmd = f"python -m ncap.service.measurements.chaos --runs {args.runs} --seed {args.seed}" + (
        f" --runner {args.runner}" if args.runner else "")
    (args.out / "chaos.json").write_text(json.dumps({"command": cmd, "machine": platform.machine(), "runs": rows,
                                                     "ok": ok, "wall_s": round(wall)}, indent=2))
    lines = ["# Chaos: kill -9 during a 3-candidate job", "",
             (f"Command: `{cmd}` ({len(rows)} runs, {wall / 60:.0f} min). Job: {CONFIG}. "
             f"**{ok}/{len(rows)} runs ok** (job done, no finished candidate retrained, integrity_check ok)."), "",
             ("| run | killed | at (s into training) | done before | restarted | attempts | final | retrained | "
             "integrity | ok |"), "|---:|---|---:|---|---|---:|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r.get('killed', '?')} | {r.get('at_s', '')} | "
                     f"{', '.join(r.get('done_before_kill', [])) or '—'} | {r.get('restarted', '')} | "
                     f"{r.get('attempts', '')} | {r.get('state', r.get('error', ''))} | "
                     f"{', '.join(r.get('retrained', [])) or 'none'} | {r.get('integrity', '')} | {r['ok']} |")
    (args.out / "chaos.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
