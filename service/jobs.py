"""Job worker of the ranking service.

One ``JobWorker`` thread lives in the BentoML worker process. It claims queued jobs from the
``JobStore`` one at a time and trains each in a separate Python process (``python -m ncap.service.jobs``),
so the API process keeps its GIL and a CPU core for requests, a crash in training cannot take the API
down, and a cancelled job can be stopped for sure.

The training process calls the ranking function (``settings.runner``, default
``ncap.service.ranking:run_ranking``) with callbacks that write every finished epoch and every finished
candidate to the store the moment they happen, and with ``completed=`` the candidates a previous,
interrupted attempt already finished, so those are reused rather than retrained.

Resumption: at start-up the worker takes an exclusive ``flock`` on ``<data_dir>/worker.lock`` (the
kernel drops it when the process dies, even by ``kill -9``), then moves jobs left ``running`` back to
``queued``. A second server on the same data dir serves the API but does not run jobs until the lock is
free. The training process dies with its parent (``PR_SET_PDEATHSIG`` plus a parent-pid check), so a
killed server never leaves an orphan trainer writing to a job that is being resumed.
"""
from __future__ import annotations

import argparse
import logging
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncap.capacitance.jsonsafe import to_jsonable
from ncap.service.store import (
    CANCELLED,
    CAND_DONE,
    CAND_FAILED,
    CAND_RUNNING,
    DONE,
    FAILED,
    RUNNING,
    JobStore,
)

log = logging.getLogger("ncap.service.jobs")

FAILED_STATUSES = ("failed", "error")


def job_recipe(job_config: dict):
    """The :class:`~ncap.models.recipe.Recipe` of a job's stored config (its recipe fields; ``None`` = default)."""
    from ncap.models.recipe import Recipe

    return Recipe(**{k: v for k, v in job_config.items() if k in Recipe.model_fields and v is not None})


# --------------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------------
def progress_summary(job: dict, candidates: list[dict], now: float | None = None) -> dict:
    """Candidates done / running / failed, current epoch, elapsed and ETA of a job."""
    now = time.time() if now is None else now
    epochs = int(job["config"].get("epochs") or 1)
    counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
    units = 0
    for c in candidates:
        counts[c["state"]] = counts.get(c["state"], 0) + 1
        if c["state"] in (CAND_DONE, CAND_FAILED):
            units += epochs
        elif c["state"] == CAND_RUNNING:
            units += min(float(c.get("epoch") or 0), epochs)
    total = max(len(candidates), len(job.get("candidates") or []))
    total_units = max(total * epochs, 1)
    elapsed = None
    if job.get("started_at"):
        elapsed = (job.get("finished_at") or now) - job["started_at"]
    eta = None
    units_this_run = units - int(job.get("done_at_start") or 0) * epochs
    if job["state"] == RUNNING and job.get("run_started_at") and units_this_run > 0:
        per_unit = (now - job["run_started_at"]) / units_this_run
        eta = max(total_units - units, 0) * per_unit
    elif job["state"] in (DONE, FAILED, CANCELLED):
        eta = 0.0
    return {
        "candidates_total": total,
        "candidates_done": counts["done"],
        "candidates_running": counts["running"],
        "candidates_failed": counts["failed"],
        "candidates_pending": max(total - counts["done"] - counts["running"] - counts["failed"], 0),
        "current_candidate": job.get("current_candidate"),
        "epoch": job.get("current_epoch"),
        "epochs": epochs,
        "fraction": 1.0 if job["state"] == DONE else round(min(units / total_units, 0.99), 4),
        "elapsed_s": None if elapsed is None else round(elapsed, 3),
        "eta_s": None if eta is None else round(eta, 1),
    }


# --------------------------------------------------------------------------------------------------
# worker thread (API process)
# --------------------------------------------------------------------------------------------------
class JobWorker:
    """Runs queued jobs one at a time, each in its own training process."""

    def __init__(self, store: JobStore, *, runner: str, data_dir: Path, train_threads: int = 1,
                 train_nice: int = 10, cancel_grace_s: float = 30.0, poll_interval_s: float = 0.5,
                 python: str = sys.executable, env: dict[str, str] | None = None):
        self.store = store
        self.runner = runner
        self.data_dir = Path(data_dir)
        self.train_threads = int(train_threads)
        self.train_nice = int(train_nice)
        self.cancel_grace_s = float(cancel_grace_s)
        self.poll_interval_s = float(poll_interval_s)
        self.python = python
        self.env = env
        self.current_job: str | None = None
        self.owner = False  # holds the worker lock
        self.requeued: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="ncap-job-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _terminate(proc, grace=min(timeout, 5.0))
        if self._thread is not None:
            self._thread.join(timeout)
        self._release_lock()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _try_lock(self) -> bool:
        import fcntl

        if self._lock_fd is None:
            self._lock_fd = os.open(self.data_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None
            self.owner = False

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._try_lock():
                self._stop.wait(2.0)  # another server owns the queue; stand by
            if self._stop.is_set():
                return
            self.owner = True
            self.requeued = self.store.requeue_interrupted()
            if self.requeued:
                log.warning("resuming %d interrupted job(s): %s", len(self.requeued), ", ".join(self.requeued))
            while not self._stop.is_set():
                job = self.store.claim_next()
                if job is None:
                    self._stop.wait(self.poll_interval_s)
                    continue
                self.current_job = job["id"]
                try:
                    self._run_job(job)
                except Exception as exc:  # keep the worker alive whatever happens to one job
                    log.exception("job %s: worker error", job["id"])
                    self.store.finish_job(job["id"], FAILED, error=f"worker error: {exc}",
                                          error_detail=traceback.format_exc())
                finally:
                    self.current_job = None
        except Exception:  # pragma: no cover - the store is gone; readiness will report it
            log.exception("job worker stopped")

    def _command(self, job_id: str) -> list[str]:
        return [self.python, "-m", "ncap.service.jobs", "--db", self.store.url, "--job", job_id,
                "--runner", self.runner, "--threads", str(self.train_threads), "--nice", str(self.train_nice),
                "--parent", str(os.getpid())]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _run_job(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = Path(job["out_dir"]).parent
        job_dir.mkdir(parents=True, exist_ok=True)
        log_path = job_dir / "train.log"
        with open(log_path, "ab") as logf:
            logf.write(f"\n=== attempt {job['attempts']} at {time.ctime()} ===\n".encode())
            logf.flush()
            proc = subprocess.Popen(self._command(job_id), stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=self._child_env(), close_fds=True)
        self._proc = proc
        cancel_seen_at: float | None = None
        try:
            while proc.poll() is None:
                if self._stop.wait(self.poll_interval_s):
                    _terminate(proc, grace=5.0)  # shutting down: the job stays 'running' -> resumed later
                    return
                if cancel_seen_at is None and self.store.cancel_requested(job_id):
                    cancel_seen_at = time.time()
                if cancel_seen_at is not None and time.time() - cancel_seen_at > self.cancel_grace_s:
                    _terminate(proc, grace=5.0)
                    self.store.finish_job(job_id, CANCELLED, error="cancelled (training process stopped)")
                    return
        finally:
            self._proc = None
        if self._stop.is_set():
            return
        after = self.store.get_job(job_id)
        if after is not None and after["state"] == RUNNING:  # the trainer died without a verdict
            if after["cancel_requested"]:
                self.store.finish_job(job_id, CANCELLED, error="cancelled")
            else:
                self.store.finish_job(
                    job_id, FAILED, error=f"training process exited with code {proc.returncode}",
                    error_detail=_tail(log_path))


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except OSError:
        pass


def _tail(path: Path, n_bytes: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n_bytes:].decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# training process
# --------------------------------------------------------------------------------------------------
def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``),
    and exit now if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        os._exit(3)


def watch_parent(parent: int, interval: float = 1.0, grace: float = 15.0) -> threading.Thread:
    """Daemon thread: once ``parent`` is gone, SIGTERM this process (graceful shutdown, which stops the
    trainer and leaves its job to be resumed), and ``os._exit`` if that has not finished after ``grace``.

    Used by the BentoML worker: if the server's main process is ``kill -9``-ed, its workers would
    otherwise live on as orphans that keep the port and the job queue."""
    def run() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.error("server process %d is gone; shutting down this worker so a restart can resume its jobs",
                  parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=run, name="ncap-parent-watch", daemon=True)
    thread.start()
    return thread


def train_job(store: JobStore, job_id: str, runner: Callable[..., dict], *,
              parent: int | None = None, stop_poll_s: float = 0.25) -> str:
    """Run one job with ``runner`` and record everything in ``store``. Returns the final state."""
    job = store.get_job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    completed = store.completed_records(job_id)
    for name in completed:
        store.add_event(job_id, "candidate_reused", name)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(job["config"])
    # the entries as submitted (labels, '=random') if recorded, else the candidate names
    candidates = list(config.get("candidates") or job["candidates"]) or None
    last_check = [0.0, False]

    def should_stop() -> bool:
        if parent is not None and os.getppid() != parent:
            os._exit(3)  # the server died: leave the job 'running' so the next server resumes it
        now = time.monotonic()
        if now - last_check[0] >= stop_poll_s:
            last_check[0] = now
            last_check[1] = store.cancel_requested(job_id)
        return bool(last_check[1])

    def on_epoch(candidate: str, epoch: float, metrics: dict | None = None) -> None:
        store.record_epoch(job_id, str(candidate), float(epoch), to_jsonable(metrics or {}))

    def on_candidate_done(record) -> None:
        record = to_jsonable(record)
        failed = str(record.get("status", "")).lower() in FAILED_STATUSES
        store.save_candidate(job_id, record, failed=failed)

    kwargs: dict[str, Any] = {"completed": completed, "on_candidate_done": on_candidate_done,
                              "on_epoch": on_epoch, "should_stop": should_stop, "make_plots": True,
                              "progress": False}
    dataset = job.get("dataset_path") or None
    try:
        doc = runner(dataset, candidates, job_recipe(config), out_dir, **kwargs)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if type(exc).__name__ == "Cancelled" or (should_stop() and isinstance(exc, Exception)):
            store.finish_job(job_id, CANCELLED, error="cancelled")
            return CANCELLED
        detail = traceback.format_exc()
        print(detail, file=sys.stderr)
        store.finish_job(job_id, FAILED, error=f"{type(exc).__name__}: {exc}", error_detail=detail)
        return FAILED
    doc = to_jsonable(doc)
    if not isinstance(doc, dict):
        doc = {"result": doc}
    if config.get("pruning_report") is not None and "pruning_report" not in doc:
        doc["pruning_report"] = config["pruning_report"]
    # candidates the runner reported in its document but not through the callback
    for rec in doc.get("candidates", []) or []:
        if isinstance(rec, dict) and rec.get("candidate") is not None:
            name = str(rec["candidate"])
            if name not in completed:
                failed = str(rec.get("status", "")).lower() in FAILED_STATUSES
                store.save_candidate(job_id, rec, failed=failed)
    store.finish_job(job_id, DONE, result=doc)
    return DONE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncap.service.jobs", description="Train one ranking job.")
    parser.add_argument("--db", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by this much")
    args = parser.parse_args(argv)
    if args.nice > 0:
        try:
            os.nice(args.nice)
        except OSError:  # pragma: no cover
            pass
    if args.parent is not None:
        die_with_parent(args.parent)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import torch

        torch.set_num_threads(max(1, args.threads))
    except ImportError:  # pragma: no cover
        pass
    store = JobStore(args.db)
    runner = pkgutil.resolve_name(args.runner)  # 'package.module:function'
    state = train_job(store, args.job, runner, parent=args.parent)
    log.info("job %s: %s", args.job, state)
    return 0 if state in (DONE, CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())
