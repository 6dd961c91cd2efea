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
import contextlib
import inspect
import logging
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncap.jsonsafe import to_jsonable
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
# data dir
# --------------------------------------------------------------------------------------------------
JOBS_DIR, STAGING_DIR, TMP_DIR = "jobs", "staging", "tmp"


DB_URL_ENV = "NCAP_TRAINER_DB_URL"


def staging_owner() -> str:
    """Name of this process's staging folder: ``<host>-<pid>-<start time>``, so that a leftover of a dead process
    is told apart from the folder of a live one (even when a pid is reused), and replicas on other hosts sharing
    the data dir are never judged by this one."""
    import socket

    import psutil

    return f"{socket.gethostname()}-{os.getpid()}-{int(psutil.Process().create_time())}"


def _owner_alive(name: str) -> bool:
    """Whether the process that owns staging folder ``name`` lives; a folder of another host counts as alive
    (only its own host can tell). Names without a host (``<pid>-<start>``, older versions) are this host's."""
    import socket

    import psutil

    parts = name.rsplit("-", 2)
    host, pid, started = parts if len(parts) == 3 else (socket.gethostname(), *name.partition("-")[::2])
    if host != socket.gethostname():
        return True
    try:
        return pid.isdigit() and int(psutil.Process(int(pid)).create_time()) == int(started)
    except (psutil.Error, ValueError):
        return False


def clean_data_dir(store: JobStore, data_dir: Path) -> list[str]:
    """Remove what interrupted submissions and jobs left behind (called once the worker lock is held, before
    any trainer starts): staging folders of processes that are gone, the trainers' temp folder, and job
    folders without a job row. Returns what was removed (paths relative to ``data_dir``)."""
    import shutil

    data_dir = Path(data_dir)
    removed: list[str] = []

    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(data_dir)))

    for folder in sorted((data_dir / STAGING_DIR).glob("*")):
        if not _owner_alive(folder.name):
            remove(folder)
    for leftover in sorted((data_dir / TMP_DIR).glob("*")):
        remove(leftover)
    with store.exclusive() as job_ids:  # no submission commits, and no deletion happens, meanwhile
        for folder in sorted((data_dir / JOBS_DIR).glob("*")):
            if folder.name not in job_ids:
                remove(folder)
    return removed


# --------------------------------------------------------------------------------------------------
# worker thread (API process)
# --------------------------------------------------------------------------------------------------
class JobWorker:
    """Runs queued jobs, each in its own training process: one at a time with the local executor; with
    ``executor="ray"`` up to ``max_concurrent_jobs`` at once, their candidates as tasks on the Ray cluster at
    ``ray_address`` (``ray_options``: ``num_cpus``/``num_gpus`` per candidate)."""

    def __init__(self, store: JobStore, *, runner: str, data_dir: Path, train_threads: int = 1,
                 train_nice: int = 10, cancel_grace_s: float = 30.0, poll_interval_s: float = 0.5,
                 python: str = sys.executable, env: dict[str, str] | None = None,
                 memory_limit_bytes: int | None = None, max_trainer_restarts: int = 3,
                 max_candidate_crashes: int = 2, executor: str = "local", ray_address: str | None = None,
                 max_concurrent_jobs: int = 1, ray_options: dict[str, float] | None = None):
        self.store = store
        self.executor, self.ray_address, self.ray_options = executor, ray_address, dict(ray_options or {})
        self.max_concurrent_jobs = int(max_concurrent_jobs) if executor == "ray" else 1
        self.memory_limit_bytes = memory_limit_bytes
        self.max_trainer_restarts = int(max_trainer_restarts)
        self.max_candidate_crashes = int(max_candidate_crashes)
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
        self._procs: dict[str, subprocess.Popen] = {}  # job id -> its training process
        self._job_threads: dict[str, threading.Thread] = {}  # concurrent jobs (executor 'ray')
        self._lock_fd: int | None = None

    @classmethod
    def from_settings(cls, store: JobStore, settings, **overrides) -> JobWorker:
        """A worker configured by :class:`~ncap.service.config.ServiceSettings` (``overrides`` win)."""
        names = ("runner", "train_threads", "train_nice", "cancel_grace_s", "poll_interval_s", "max_trainer_restarts",
                 "executor", "ray_address", "max_concurrent_jobs")
        kwargs = {name: getattr(settings, name) for name in names}
        kwargs.update(data_dir=settings.resolved_data_dir, memory_limit_bytes=settings.job_memory_limit_bytes,
                      ray_options={"num_cpus": settings.ray_cpus_per_candidate,
                                   "num_gpus": settings.ray_gpus_per_candidate})
        return cls(store, **{**kwargs, **overrides})

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="ncap-job-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                _terminate(proc, grace=min(timeout, 5.0))
        for thread in [self._thread, *self._job_threads.values()]:
            if thread is not None:
                thread.join(timeout)
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
            removed = clean_data_dir(self.store, self.data_dir)
            if removed:
                log.warning("removed %d leftover(s) of interrupted submissions and jobs: %s", len(removed),
                            ", ".join(removed[:20]))
            self.requeued = self.store.requeue_interrupted()
            if self.requeued:
                log.warning("resuming %d interrupted job(s): %s", len(self.requeued), ", ".join(self.requeued))
            while not self._stop.is_set():
                self._job_threads = {k: t for k, t in self._job_threads.items() if t.is_alive()}
                job = self.store.claim_next() if len(self._job_threads) < self.max_concurrent_jobs else None
                if job is None:
                    self._stop.wait(self.poll_interval_s)
                elif self.max_concurrent_jobs == 1:
                    self._run_claimed(job)
                else:  # executor 'ray': this job's trainer drives its candidates on the cluster; claim more
                    thread = threading.Thread(target=self._run_claimed, args=(job,), name=f"ncap-job-{job['id']}",
                                              daemon=True)
                    self._job_threads[job["id"]] = thread
                    thread.start()
        except Exception:  # pragma: no cover - the store is gone; readiness will report it
            log.exception("job worker stopped")

    def _run_claimed(self, job: dict) -> None:
        self.current_job = job["id"]
        try:
            self._run_job(job)
        except Exception as exc:  # keep the worker alive whatever happens to one job
            log.exception("job %s: worker error", job["id"])  # the traceback: server log only
            self.store.finish_job(job["id"], FAILED, error=f"worker error: {type(exc).__name__}")
        finally:
            self.current_job = next(iter(self._procs), None)

    def _command(self, job_id: str) -> list[str]:
        return [self.python, "-m", "ncap.service.jobs", "--job", job_id, "--db", "-",  # the store URL: stdin
                "--runner", self.runner, "--threads", str(self.train_threads), "--nice", str(self.train_nice),
                "--parent", str(os.getpid())] + (
                    ["--memory-limit", str(self.memory_limit_bytes)] if self.memory_limit_bytes else []) + (
                    self._ray_args() if self.executor == "ray" else [])

    def _ray_args(self) -> list[str]:
        args = ["--executor", "ray", "--ray-address", str(self.ray_address)]
        for key in ("num_cpus", "num_gpus"):
            if key in self.ray_options:
                args += [f"--{key.replace('_', '-')}", str(self.ray_options[key])]
        return args

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.setdefault("PYTHONUNBUFFERED", "1")
        tmp = self.data_dir / TMP_DIR  # the trainer's temp files live here: start-up removes leftovers
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        # with executor 'ray' the trainer is a Ray driver and needs the cluster's token; the images are then
        # decoded by the cluster's workers, not by the trainer
        return trainer_environment(env, keep=RAY_SECRETS if self.executor == "ray" else ())

    def _run_job(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = Path(job["out_dir"]).parent
        job_dir.mkdir(parents=True, exist_ok=True)
        log_path = job_dir / "train.log"
        with open(log_path, "ab") as logf:
            logf.write(f"\n=== attempt {job['attempts']} at {time.ctime()} ===\n".encode())
            logf.flush()
            log_start = logf.tell()
            proc = subprocess.Popen(self._command(job_id), stdin=subprocess.PIPE, stdout=logf,
                                    stderr=subprocess.STDOUT, env=self._child_env(), close_fds=True)
        with contextlib.suppress(OSError):  # the store URL (it may hold a password) goes by a pipe: it is
            proc.stdin.write(self.store.url.encode() + b"\n")  # neither on the command line (`ps`) nor in
            proc.stdin.close()  # the environment (/proc/<pid>/environ), which the decoding process carries
        self._procs[job_id] = proc
        over_memory = False
        try:
            over_memory = self._watch(proc, job_id)
        finally:
            self._procs.pop(job_id, None)
        if self._stop.is_set():
            return
        after = self.store.get_job(job_id)
        if after is None or after["state"] != RUNNING:  # the trainer gave its verdict (or was cancelled)
            return
        if after["cancel_requested"]:
            self.store.finish_job(job_id, CANCELLED, error="cancelled")
            return
        reason = death_reason(proc.returncode, _tail(log_path, start=log_start), self.memory_limit_bytes,
                              over_memory)
        state = self.store.record_trainer_death(job_id, reason, max_candidate_crashes=self.max_candidate_crashes,
                                                max_restarts=self.max_trainer_restarts)
        log.error("job %s: %s; job is now %s", job_id, reason, state)

    def _watch(self, proc: subprocess.Popen, job_id: str) -> bool:
        """Wait for the trainer; stop it on shutdown, on a cancel past its grace, or when its resident memory
        passes the backstop (``WATCHDOG_FACTOR`` x the limit, for memory ``RLIMIT_DATA`` does not count).
        Returns whether it was stopped for memory."""
        cancel_seen_at: float | None = None
        while proc.poll() is None:
            if self._stop.wait(self.poll_interval_s):
                _terminate(proc, grace=5.0)  # shutting down: the job stays 'running' -> resumed later
                return False
            if cancel_seen_at is None and self.store.cancel_requested(job_id):
                cancel_seen_at = time.time()
            if cancel_seen_at is not None and time.time() - cancel_seen_at > self.cancel_grace_s:
                _terminate(proc, grace=5.0)
                self.store.finish_job(job_id, CANCELLED, error="cancelled (training process stopped)")
                return False
            if self.memory_limit_bytes and _resident_bytes(proc.pid) > WATCHDOG_FACTOR * self.memory_limit_bytes:
                proc.kill()
                proc.wait(10)
                return True
        return False


WATCHDOG_FACTOR = 1.5  # RSS also holds shared libraries (~0.4 GB of torch) that RLIMIT_DATA leaves out


def _resident_bytes(pid: int) -> int:
    """Resident memory of a process and its children (0 if it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def death_reason(returncode: int | None, log_tail: str, memory_limit: int | None, over_memory: bool) -> str:
    """One line saying why a training process ended without recording a verdict."""
    from ncap.models.memory import candidate_failure, format_bytes

    limit = f" (limit {format_bytes(memory_limit)})" if memory_limit else ""
    if over_memory:
        return f"out of memory{limit}: the training process passed {WATCHDOG_FACTOR:g}x the limit and was stopped"
    if candidate_failure(log_tail[-4000:]).startswith("out of memory"):
        return f"out of memory{limit}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if returncode == -signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with code {returncode} without a result"


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except OSError:
        pass


def _tail(path: Path, n_bytes: int = 16000, start: int = 0) -> str:
    """The last ``n_bytes`` of a log file from offset ``start`` on."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - n_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


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


def _declares(fn: Callable, name: str) -> bool:
    """Whether ``fn`` declares the keyword parameter ``name`` (``**kwargs`` does not count: a runner that
    declares ``on_candidate_start`` is trusted to call it before each candidate)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _setup_error(exc: BaseException) -> bool:
    """A problem of the job as a whole (its dataset or candidate list), not of one candidate."""
    from ncap.models.archive import DataError
    from ncap.models.candidates import CandidateError

    return isinstance(exc, (DataError, CandidateError))


def _one_line_errors(doc: dict) -> dict:
    """Failed candidates' errors in a document cut to one line (tracebacks stay in the log)."""
    from ncap.models.memory import candidate_failure

    for rec in doc.get("candidates", []) or []:
        if isinstance(rec, dict) and rec.get("error"):
            rec["error"] = candidate_failure(str(rec["error"]))
    return doc


class _JobHooks:
    """The callbacks a runner gets for one job: every start, epoch and finished candidate goes straight into the
    store; ``should_stop`` reads the job's cancel flag (at most every ``stop_poll_s``) and exits the process
    when the server (``parent``) is gone."""

    def __init__(self, store: JobStore, job_id: str, parent: int | None, stop_poll_s: float):
        self.store, self.job_id, self.parent, self.stop_poll_s = store, job_id, parent, stop_poll_s
        self.started: list[str] = []
        self._checked_at, self._cancelled = 0.0, False

    def should_stop(self) -> bool:
        if self.parent is not None and os.getppid() != self.parent:
            os._exit(3)  # the server died: leave the job 'running' so the next server resumes it
        now = time.monotonic()
        if now - self._checked_at >= self.stop_poll_s:
            self._checked_at, self._cancelled = now, self.store.cancel_requested(self.job_id)
        return bool(self._cancelled)

    def on_candidate_start(self, name: str) -> None:
        self.started.append(str(name))
        self.store.mark_candidate_started(self.job_id, str(name))

    def on_epoch(self, candidate: str, epoch: float, metrics: dict | None = None) -> None:
        self.store.record_epoch(self.job_id, str(candidate), float(epoch), to_jsonable(metrics or {}))

    def on_candidate_done(self, record) -> None:
        from ncap.models.memory import candidate_failure

        record = to_jsonable(record)
        failed = str(record.get("status", "")).lower() in FAILED_STATUSES
        if failed and record.get("error"):
            record["error"] = candidate_failure(str(record["error"]))
        self.store.save_candidate(self.job_id, record, failed=failed)

    def runner_kwargs(self, runner: Callable, executor) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"on_candidate_done": self.on_candidate_done, "on_epoch": self.on_epoch,
                                  "should_stop": self.should_stop, "make_plots": True, "progress": False}
        if _declares(runner, "on_candidate_start"):
            kwargs["on_candidate_start"] = self.on_candidate_start
        if _declares(runner, "keep"):  # the winner's fine-tuned model, offered in the job's artifacts
            kwargs["keep"] = 1
        if executor is not None:
            if not _declares(runner, "executor"):
                raise SystemExit(f"runner {runner!r} takes no executor: use executor 'local' with it")
            kwargs["executor"] = executor
        return kwargs


def train_job(store: JobStore, job_id: str, runner: Callable[..., dict], *,
              parent: int | None = None, stop_poll_s: float = 0.25, executor=None) -> str:
    """Run one job with ``runner`` and record everything in ``store``. Returns the final state.

    Per-candidate isolation: when the runner raises for one candidate (whatever the exception), that
    candidate is stored ``failed`` with a one-line reason, its traceback goes to the log, and the runner is
    called again with every finished candidate as ``completed`` (reused, not retrained), so the rest of
    the job goes on. A problem of the whole job (its dataset, its candidate list) fails the job.

    ``executor`` (an :class:`~ncap.service.executors.Executor`) is passed on to a runner that declares it; a
    candidate's own failure never raises there (it comes back as a failed record), so whatever the runner
    raises with an executor fails the job."""
    from ncap.models.memory import candidate_failure

    job = store.get_job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(job["config"])
    # the entries as submitted (labels, '=random') if recorded, else the candidate names
    candidates = list(config.get("candidates") or job["candidates"]) or None
    hooks = _JobHooks(store, job_id, parent, stop_poll_s)
    kwargs = hooks.runner_kwargs(runner, executor)
    dataset = job.get("dataset_path") or None
    for _attempt in range(len(job["candidates"]) + 1):
        completed = store.completed_records(job_id)
        for name in completed:
            store.add_event(job_id, "candidate_reused", name)
        hooks.started.clear()
        try:
            doc = runner(dataset, candidates, job_recipe(config), out_dir, completed=completed, **kwargs)
            break
        except Exception as exc:
            if type(exc).__name__ == "Cancelled" or hooks.should_stop():
                store.finish_job(job_id, CANCELLED, error="cancelled")
                return CANCELLED
            log.exception("job %s: the ranking raised", job_id)  # the traceback: train.log, never the client
            culprit = None if executor is not None else hooks.started[-1] if hooks.started else (
                None if "on_candidate_start" in kwargs or _setup_error(exc) else store.in_flight_candidate(job_id))
            if culprit is None or culprit in store.completed_records(job_id):
                error = candidate_failure(exc).replace(str(out_dir.parent) + os.sep, "")  # no server paths
                store.finish_job(job_id, FAILED, error=error)
                return FAILED
            log.error("job %s: candidate %s failed: %s", job_id, culprit, candidate_failure(exc))
            store.save_candidate(job_id, {"candidate": culprit, "status": "failed",
                                          "error": candidate_failure(exc)}, failed=True)
    else:  # every candidate raised and the runner still did not finish
        store.finish_job(job_id, FAILED, error="every candidate failed")
        return FAILED
    return _finish(store, job_id, doc, config, completed)


def _finish(store: JobStore, job_id: str, doc, config: dict, completed: dict) -> str:
    """Store the runner's document as the job's result (and the candidates it reported only there)."""
    doc = to_jsonable(doc)
    if not isinstance(doc, dict):
        doc = {"result": doc}
    doc = _one_line_errors(doc)
    if isinstance(doc.get("dataset"), dict):  # the client's file name, never the upload's path on this server
        job = store.get_job(job_id) or {}
        doc["dataset"]["source"] = job.get("dataset_name") or "digits"
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


SECRET_ENV = frozenset({"NCAP_TOKEN", "NCAP_DB_URL", "NCAP_SERVICE_CONFIG", DB_URL_ENV, "PGPASSWORD", "PGPASSFILE"})
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "CREDENTIAL")


RAY_SECRETS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def trainer_environment(env: dict[str, str], keep: tuple[str, ...] = ()) -> dict[str, str]:
    """``env`` without secrets, for the training process (it decodes untrusted images): the service token,
    the store URL, the settings file, PostgreSQL passwords and any variable whose name says it is a secret,
    except those named in ``keep``."""
    return {k: v for k, v in env.items() if k in keep or (
        k not in SECRET_ENV and not any(w in k.upper() for w in _SECRET_WORDS))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncap.service.jobs", description="Train one ranking job.")
    parser.add_argument("--db", default=os.environ.get(DB_URL_ENV),
                        help=f"job store URL [default: ${DB_URL_ENV}; '-' reads it from the first line of "
                             "stdin, which is how the service passes it]")
    parser.add_argument("--job", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by this much")
    parser.add_argument("--memory-limit", type=int, default=None,
                        help="RLIMIT_DATA of this process in bytes (ncap.models.memory.apply_memory_limit)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per candidate")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="Ray GPUs per candidate")
    args = parser.parse_args(argv)
    if args.db == "-":
        args.db = sys.stdin.readline().strip()
    if not args.db:
        parser.error(f"no job store: give --db or set {DB_URL_ENV}")
    if args.memory_limit:
        from ncap.models.memory import apply_memory_limit

        apply_memory_limit(args.memory_limit)  # before torch is imported and allocates anything
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
    executor = None
    if args.executor == "ray":  # this process is the Ray driver of the job; its tasks die with it
        from ncap.service.executors import RayExecutor

        executor = RayExecutor(args.ray_address, num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    try:
        state = train_job(store, args.job, runner, parent=args.parent, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    log.info("job %s: %s", args.job, state)
    return 0 if state in (DONE, CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())
