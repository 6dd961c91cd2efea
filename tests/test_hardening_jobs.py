"""Issue 13, worker and store: per-candidate isolation (defect 3), trainer deaths retried with finished
candidates reused (defect 4), the memory limit enforced in the training process (defect 1), start-up
cleanup of interrupted submissions (defect 8) and one-line errors (defect 9). The store's side of trainer
deaths and of /jobs/delete is tested on both store backends in test_store.py.

The training processes here are real (``python -m ncap.service.jobs``); their ranking functions are the fakes
below, which train nothing but behave like a candidate that raises, kills its process or allocates too much."""
from __future__ import annotations

import io
import json
import mmap
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from ncap.models.memory import GB, candidate_failure
from ncap.service import jobs
from ncap.service.store import JobStore


def _runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, on_epoch=None,
            should_stop=None, make_plots=True, progress=True):
    """Candidates train 2 'epochs' of 0.1 s; some misbehave by name:
    raise: AssertionError (like timm's ViT at 32 px); killer: SIGKILLs its process; hog: allocates 4 GB
    (over the limit); shm: fills 2.5 GB of shared memory, which RLIMIT_DATA does not count (the watchdog must)."""
    completed = dict(completed or {})
    records = []
    for name in candidates:
        if name in completed:
            records.append({**completed[name], "reused": True})
            continue
        for e in (1, 2):
            time.sleep(0.1)
            on_epoch(name, float(e), {"val_accuracy": 0.1 * e})
            _misbehave(name, Path(out_dir))
        rec = {"candidate": name, "status": "ok", "predicted_accuracy": 0.5, "predicted_std": 0.1}
        on_candidate_done(rec)
        records.append(rec)
    return {"candidates": records, "plots": []}


def _misbehave(name: str, out_dir: Path) -> None:
    if name == "raise":
        raise AssertionError("Input height (32) doesn't match model (224).\n  (more lines of detail)")
    if name == "killer":
        os.kill(os.getpid(), signal.SIGKILL)
    if name == "hog":
        np.ones(4 * GB // 8)
    if name == "shm":
        buf = mmap.mmap(-1, 5 * GB // 2)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        time.sleep(30)  # the watchdog stops this process long before


def _run_jobs(tmp_path: Path, specs: dict[str, list[str]], timeout: float = 120.0, **worker_kw) -> JobStore:
    store = JobStore(str(tmp_path / "jobs.db"))
    for job_id, cands in specs.items():
        store.create_job(job_id, config={"epochs": 2}, candidates=cands, out_dir=tmp_path / "jobs" / job_id / "out")
    worker = jobs.JobWorker(store, runner="test_hardening_jobs:_runner", data_dir=tmp_path, poll_interval_s=0.1,
                            **worker_kw)
    worker.start()
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(store.get_job(j)["state"] in ("done", "failed", "cancelled") for j in specs):
                return store
            time.sleep(0.1)
        raise AssertionError({j: store.get_job(j)["state"] for j in specs})
    finally:
        worker.stop()


def _epochs(store: JobStore, job_id: str) -> list[tuple[str, float]]:
    return [(e["candidate"], e["ts"]) for e in store.events(job_id, "epoch")]


def test_a_raising_and_an_oversized_candidate_fail_alone_with_one_line_reasons(tmp_path):
    """Defects 3 and 1: any exception in one candidate fails that candidate only (one line, no traceback);
    an allocation past the per-job limit fails in the training process (RLIMIT_DATA), not on the host."""
    store = _run_jobs(tmp_path, {"j": ["a", "raise", "hog", "b"]}, memory_limit_bytes=int(1.5 * GB))
    job = store.get_job("j")
    assert job["state"] == "done" and job["error"] is None and job["trainer_deaths"] == 0
    cands = {c["name"]: c for c in store.candidates("j")}
    assert cands["a"]["state"] == cands["b"]["state"] == "done"
    assert (cands["raise"]["state"], cands["raise"]["error"]) == (
        "failed", "AssertionError: Input height (32) doesn't match model (224).")
    assert (cands["hog"]["state"], cands["hog"]["error"]) == ("failed", "out of memory (limit 1.5 GB)")
    doc = store.get_result("j")
    assert {r["candidate"]: r["status"] for r in doc["candidates"]} == {"a": "ok", "raise": "failed", "hog": "failed",
                                                                        "b": "ok"}
    assert [n for n, _ in _epochs(store, "j")].count("a") == 2  # a was trained once, then reused
    log = (tmp_path / "jobs" / "j" / "train.log").read_text()
    assert "Traceback" in log and "Traceback" not in json.dumps(doc) and "Traceback" not in json.dumps(cands)


def test_trainer_killed_twice_by_one_candidate_fails_it_and_the_job_finishes(tmp_path):
    """Defect 4: a trainer killed by a signal is restarted with the finished candidates reused; the candidate
    that killed it twice is failed with the reason and the job finishes with the others."""
    store = _run_jobs(tmp_path, {"j": ["a", "killer", "b"]})
    job = store.get_job("j")
    assert job["state"] == "done", job
    assert job["trainer_deaths"] == 2 and job["attempts"] == 3
    cands = {c["name"]: c for c in store.candidates("j")}
    assert cands["killer"]["state"] == "failed" and cands["killer"]["crashes"] == 2
    assert "killed by SIGKILL" in cands["killer"]["error"] and "2 times" in cands["killer"]["error"]
    assert cands["a"]["state"] == cands["b"]["state"] == "done"
    deaths = store.events("j", "trainer_died")
    assert [d["candidate"] for d in deaths] == ["killer", "killer"]
    assert not [n for n, ts in _epochs(store, "j") if n == "a" and ts > deaths[0]["ts"]], "a was retrained"
    assert [e["candidate"] for e in store.events("j", "candidate_reused")].count("a") == 2


@pytest.mark.slow
def test_memory_outside_rlimit_data_is_stopped_by_the_watchdog(tmp_path):
    store = _run_jobs(tmp_path, {"j": ["shm", "a"]}, memory_limit_bytes=int(1.2 * GB), max_candidate_crashes=1,
                      timeout=180)
    cands = {c["name"]: c for c in store.candidates("j")}
    assert store.get_job("j")["state"] == "done"
    assert cands["shm"]["state"] == "failed" and cands["shm"]["error"].startswith("out of memory (limit 1.2 GB)")
    assert cands["a"]["state"] == "done"


# ------------------------------------------------------------------------------------- store, data dir
def test_clean_data_dir_removes_leftovers_of_dead_processes_only(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    store.create_job("kept", config={"epochs": 1}, candidates=["a"], out_dir=tmp_path / "jobs" / "kept" / "out")
    import socket

    here = socket.gethostname()
    for rel in ("jobs/kept/upload/d.npz", "jobs/orphan/upload/d.npz", "staging/1-1/job/upload/d.npz",
                f"staging/{here}-1-1/job/upload/d.npz", "staging/other-host.example-1-1/job/upload/d.npz",
                f"staging/{jobs.staging_owner()}/job/upload/d.npz", "tmp/ncap-npz-x/x.npy"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    removed = jobs.clean_data_dir(store, tmp_path)
    assert sorted(removed) == sorted(["jobs/orphan", "staging/1-1", f"staging/{here}-1-1", "tmp/ncap-npz-x"])
    assert (tmp_path / "staging/other-host.example-1-1").exists()  # a replica on another host judges its own
    assert (tmp_path / "jobs/kept/upload/d.npz").exists()
    assert (tmp_path / f"staging/{jobs.staging_owner()}/job/upload/d.npz").exists()  # this process is alive


def test_candidate_failure_is_one_line():
    assert candidate_failure(ValueError("bad\nTraceback (most recent call last):\n  File x")) == "ValueError: bad"
    assert candidate_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                                          "memory: you tried to allocate 3221225472 bytes."), 2 * GB) \
        == "out of memory (limit 2.0 GB)"
    assert candidate_failure(MemoryError(), 3 * GB) == "out of memory (limit 3.0 GB)"
    assert len(candidate_failure(KeyError("x" * 1000))) == 300
    assert candidate_failure("RuntimeError: CUDA out of memory. Tried to allocate 2 GiB", GB) == \
        "out of memory (limit 1.0 GB)"


def test_the_store_url_reaches_the_trainer_by_a_pipe_and_its_environment_has_no_secrets(tmp_path, monkeypatch):
    """A PostgreSQL URL may hold a password: `ps` shows command lines, and the training process (which decodes
    untrusted images) could leak its environment, so the URL goes by stdin and no secret is in the env."""
    monkeypatch.setenv("NCAP_TOKEN", "secret-token")
    monkeypatch.setenv("PGPASSWORD", "pw")
    monkeypatch.setenv("MY_SERVICE_API_KEY", "k")
    store = JobStore(str(tmp_path / "jobs.db"))
    worker = jobs.JobWorker(store, runner="ncap.service.ranking:run_ranking", data_dir=tmp_path)
    command = worker._command("j")
    assert store.url not in " ".join(command) and command[command.index("--db") + 1] == "-"
    env = worker._child_env()
    assert not {"NCAP_TOKEN", "PGPASSWORD", "MY_SERVICE_API_KEY", jobs.DB_URL_ENV} & set(env)
    assert store.url not in env.values() and "secret-token" not in env.values()
    assert env["PATH"] == os.environ["PATH"]  # what is not a secret stays
    monkeypatch.setattr("sys.stdin", io.StringIO(store.url + "\n"))
    monkeypatch.delenv(jobs.DB_URL_ENV, raising=False)
    with pytest.raises(SystemExit, match="no job"):  # read the URL from stdin, opened the store, found no job
        jobs.main(["--job", "j", "--db", "-", "--runner", "ncap.service.ranking:run_ranking"])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit):  # the trainer refuses to start without a store
        jobs.main(["--job", "j", "--db", "-", "--runner", "x:y"])
