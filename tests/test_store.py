"""The service's job store (service/store.py) on both backends: SQLite and a real PostgreSQL server
(tests/pg_fixture.py). Lifecycle and resume semantics, strict JSON, cancel, trainer deaths, deletion,
files committed with their row, schema upgrades of old SQLite files, and exclusivity across processes:
two processes claiming from one store never claim a job twice, and on PostgreSQL a ``kill -9`` of a
claiming process hands its job back to the queue while a live process's job stays with it, and two service
workers (replicas) sharing a PostgreSQL store run every job once."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from pg_fixture import postgres_server, postgres_url, store_url  # noqa: F401  (fixtures)

from ncap.service.store import JobStore, StoreError, sqlite_path_from_url
from ncap.service.store import store_url as parse_store_url


def _new_job(store: JobStore, tmp: Path, candidates=("a", "b"), epochs=2, job_id="j1") -> dict:
    return store.create_job(job_id, config={"epochs": epochs, "seed": 0}, candidates=list(candidates),
                            out_dir=tmp / "jobs" / job_id / "out")


@pytest.fixture
def store(store_url):  # noqa: F811  (the fixture imported above)
    store = JobStore(store_url)
    yield store
    store.close()


# ------------------------------------------------------------------------------------------- URLs
def test_store_urls(tmp_path):
    assert sqlite_path_from_url(f"sqlite:///{tmp_path}/x.db") == Path(f"{tmp_path}/x.db")
    assert sqlite_path_from_url("sqlite:///rel/x.db") == Path("rel/x.db")
    assert sqlite_path_from_url(str(tmp_path / "y.db")) == tmp_path / "y.db"
    assert sqlite_path_from_url("sqlite+pysqlite:///rel/x.db?timeout=5") == Path("rel/x.db")  # SQLAlchemy's form
    for url in ("postgresql://u:pw@h:5433/db", "postgres://u:pw@h:5433/db", "postgresql+psycopg://u:pw@h:5433/db"):
        parsed = parse_store_url(url)
        assert (parsed.drivername, parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
            "postgresql+psycopg", "u", "pw", "h", 5433, "db")
    for bad, words in [("postgresql://u@h/db", "not a SQLite URL"), ("sqlite:///:memory:", "in-memory"),
                       ("mysql://h/db", "unsupported"), ("sqlite://x.db", "bad SQLite URL"),
                       ("sqlite://", "in-memory"), ("://nothing", "cannot parse")]:
        with pytest.raises(StoreError, match=words):
            sqlite_path_from_url(bad)
    with pytest.raises(StoreError, match="psycopg 3"):
        parse_store_url("postgresql+psycopg2://u@h/db")
    with pytest.raises(StoreError, match="cannot open job store postgresql\\+psycopg://u:\\*\\*\\*@127.0.0.1:1/db") as exc:
        JobStore("postgresql://u:secret@127.0.0.1:1/db")  # nothing listens on port 1
    assert "secret" not in str(exc.value)


# -------------------------------------------------------------------------------- both backends
def test_store_writes_strict_json(store, tmp_path):
    _new_job(store, tmp_path)
    store.save_candidate("j1", {"candidate": "a", "status": "ok", "loss": float("nan"),
                                "beta": np.array([1.0, np.inf]), "out": tmp_path / "a"})
    engine = sa.create_engine(parse_store_url(store.url))
    with engine.connect() as db:
        raw = db.exec_driver_sql("SELECT record FROM candidates WHERE name = 'a'").scalar()
    engine.dispose()
    assert json.loads(raw, parse_constant=pytest.fail) == {"candidate": "a", "status": "ok", "loss": None,
                                                          "beta": [1.0, None], "out": str(tmp_path / "a")}


def test_store_lifecycle_and_resume_semantics(store, tmp_path):
    if store.is_sqlite:
        assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _new_job(store, tmp_path)
    assert store.get_job("j1")["state"] == "queued" and store.ping() and store.integrity_check() == "ok"
    job = store.claim_next()
    assert job["id"] == "j1" and job["state"] == "running" and job["attempts"] == 1
    assert store.claim_next() is None
    store.record_epoch("j1", "a", 1.0, {"val_accuracy": 0.3})
    assert store.save_candidate("j1", {"candidate": "a", "status": "ok", "wall_time_s": 1.5})
    first = {c["name"]: c for c in store.candidates("j1")}["a"]
    # a second record for a finished candidate never replaces the first
    assert not store.save_candidate("j1", {"candidate": "a", "status": "ok", "wall_time_s": 9.0})
    again = {c["name"]: c for c in store.candidates("j1")}["a"]
    assert again["finished_at"] == first["finished_at"] and again["wall_time"] == 1.5
    store.record_epoch("j1", "b", 1.0)
    store.close()  # the server dies: the job goes back to the queue, the finished candidate stays
    store2 = JobStore(store.url)  # what a restarted server opens
    assert store2.requeue_interrupted() == ["j1"]
    cands = {c["name"]: c for c in store2.candidates("j1")}
    assert cands["a"]["state"] == "done" and cands["b"]["state"] == "pending"
    assert list(store2.completed_records("j1")) == ["a"]
    job = store2.claim_next()
    assert job["attempts"] == 2 and job["done_at_start"] == 1
    kinds = [e["kind"] for e in store2.events("j1")]
    assert kinds[:2] == ["submitted", "started"] and "requeued" in kinds and kinds[-1] == "resumed"
    assert [j["id"] for j in store2.list_jobs()] == ["j1"] and store2.count_jobs("running") == 1
    store2.close()


def test_store_cancel(store, tmp_path):
    _new_job(store, tmp_path, job_id="q")
    assert store.request_cancel("q") == "cancelled"
    assert store.claim_next() is None
    _new_job(store, tmp_path, job_id="r")
    store.claim_next()
    assert store.request_cancel("r") == "running" and store.cancel_requested("r")
    assert store.finish_job("r", "cancelled")
    assert not store.finish_job("r", "done")  # final states are final
    assert store.request_cancel("missing") is None


def test_trainer_death_bookkeeping(store, tmp_path):
    """The store's side of a trainer death, without processes: the candidate in flight (the running one, else
    the first unfinished) counts the crash; the job is requeued until the restart budget is spent."""
    store.create_job("j", config={}, candidates=["a", "b", "c"], out_dir=tmp_path / "j")
    store.claim_next()
    store.save_candidate("j", {"candidate": "a", "status": "ok"})
    assert store.in_flight_candidate("j") == "b"
    store.record_epoch("j", "c", 0.5)  # c is the one marked running
    assert store.in_flight_candidate("j") == "c"
    assert store.record_trainer_death("j", "boom", max_candidate_crashes=2, max_restarts=1) == "queued"
    assert {c["name"]: (c["state"], c["crashes"]) for c in store.candidates("j")} == {
        "a": ("done", 0), "b": ("pending", 0), "c": ("pending", 1)}
    store.claim_next()
    assert store.record_trainer_death("j", "boom again", max_candidate_crashes=2, max_restarts=1) == "failed"
    job = store.get_job("j")
    assert job["error"] == "the training process died 2 times; last: boom again" and job["trainer_deaths"] == 2
    assert store.record_trainer_death("j", "late", max_restarts=1) == "failed"  # a final job is left alone


def test_commit_moves_files_and_row_together(store, tmp_path):
    staged, final = tmp_path / "staging" / "j", tmp_path / "jobs" / "j"
    staged.mkdir(parents=True)
    (tmp_path / "jobs").mkdir()

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.create_job("j", config={}, candidates=["a"], out_dir=final / "out", on_commit=fail)
    assert store.get_job("j") is None and store.integrity_check() == "ok"
    store.create_job("j", config={}, candidates=["a"], out_dir=final / "out", on_commit=lambda: staged.rename(final))
    assert store.get_job("j") is not None and final.is_dir() and not staged.exists()


def test_delete_job(store, tmp_path):
    store.create_job("j", config={}, candidates=["a"], out_dir=tmp_path / "j")
    with pytest.raises(ValueError, match="queued; cancel it first"):
        store.delete_job("j")
    store.request_cancel("j")
    assert store.delete_job("j")["id"] == "j"
    assert store.get_job("j") is None and store.candidates("j") == [] and store.events("j") == []
    assert store.delete_job("j") is None and store.integrity_check() == "ok"


def test_exclusive_holds_back_new_jobs(store, tmp_path):
    """While exclusive() is held, a submission waits (it commits afterwards, so it is never an orphan)."""
    _new_job(store, tmp_path, job_id="old")
    done = threading.Event()
    with store.exclusive() as ids:
        assert ids == {"old"}
        submit = threading.Thread(target=lambda: (_new_job(store, tmp_path, job_id="new"), done.set()))
        submit.start()
        assert not done.wait(0.5) and store.get_job("new") is None
    submit.join(30)
    assert done.is_set() and store.get_job("new")["state"] == "queued"


def test_schema_upgrade_of_an_old_sqlite_file(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # a store created before trainer_deaths / crashes / claimed_by existed
        conn.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL, "
                           "updated_at REAL NOT NULL, started_at REAL, finished_at REAL, run_started_at REAL, "
                           "config TEXT NOT NULL, candidates TEXT NOT NULL, dataset_path TEXT, dataset_name TEXT, "
                           "dataset_kind TEXT, dataset_bytes INTEGER NOT NULL DEFAULT 0, out_dir TEXT NOT NULL, "
                           "cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, "
                           "current_candidate TEXT, current_epoch REAL, epochs_this_run INTEGER NOT NULL DEFAULT 0, "
                           "done_at_start INTEGER NOT NULL DEFAULT 0, error TEXT, error_detail TEXT, result TEXT);"
                           "CREATE TABLE candidates (job_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT "
                           "NULL, state TEXT NOT NULL, epoch REAL, started_at REAL, finished_at REAL, wall_time REAL, "
                           "record TEXT, error TEXT, PRIMARY KEY (job_id, name));"
                           "INSERT INTO jobs (id, state, created_at, updated_at, config, candidates, out_dir) "
                           "VALUES ('old', 'queued', 1.0, 1.0, '{}', '[\"a\"]', 'o');"
                           "INSERT INTO candidates VALUES ('old', 'a', 0, 'pending', NULL, NULL, NULL, NULL, NULL, NULL);")
    store = JobStore(str(db))
    assert store.get_job("old")["trainer_deaths"] == 0 and store.candidates("old")[0]["crashes"] == 0
    assert store.claim_next()["id"] == "old" and store.integrity_check() == "ok"
    with sqlite3.connect(db) as conn:
        assert "claimed_by" in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}


# ----------------------------------------------------------------------------- several processes
_CLAIMER = """
import json, os, sys, time
from ncap.service.store import JobStore
store = JobStore(sys.argv[1])
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
claimed = []
while store.count_jobs("queued"):
    job = store.claim_next()  # None also when the other process holds the last queued row (SKIP LOCKED)
    if job is not None:
        claimed.append(job["id"])
print(json.dumps(claimed), flush=True)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)


def test_two_processes_never_claim_a_job_twice(store, tmp_path):
    ids = [f"job{i:03d}" for i in range(120)]
    for job_id in ids:
        store.create_job(job_id, config={}, candidates=["a"], out_dir=tmp_path / job_id)
    go = tmp_path / "go"
    procs = [_python(_CLAIMER, store.url, str(go)) for _ in range(2)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        go.touch()  # both start claiming at once
        claimed = [json.loads(p.communicate(timeout=120)[0].splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == ids
    assert {j["attempts"] for j in store.list_jobs(limit=len(ids))} == {1}
    assert sum(len(store.events(job_id, "started")) for job_id in ids) == len(ids)


_HOLDER = """
import sys, time
from ncap.service.store import JobStore
store = JobStore(sys.argv[1])
print(store.claim_next()["id"], flush=True)
time.sleep(600)  # a replica running the job
"""


def test_postgres_kill_9_requeues_only_the_dead_claimers_job(postgres_url, tmp_path):  # noqa: F811
    """Two replicas hold a job each; one is killed with SIGKILL. A restarting replica requeues that job only
    (the server dropped the dead process's claim lock), and claims it again as a resumed attempt."""
    store = JobStore(postgres_url)
    for job_id in ("a", "b", "c"):
        store.create_job(job_id, config={}, candidates=["x"], out_dir=tmp_path / job_id)
    holders = []
    try:
        for _ in range(2):
            holders.append(_python(_HOLDER, postgres_url))
            holders[-1].stdout.readline()
        assert store.requeue_interrupted() == []  # both claimers are alive
        os.kill(holders[0].pid, signal.SIGKILL)
        holders[0].wait(10)
        restarted = JobStore(postgres_url)
        for _ in range(100):  # the server notices the closed connection within milliseconds
            requeued = restarted.requeue_interrupted()
            if requeued:
                break
            time.sleep(0.1)
        assert requeued == ["a"] and store.get_job("b")["state"] == "running"
        job = restarted.claim_next()
        assert (job["id"], job["attempts"]) == ("a", 2)
        assert [e["kind"] for e in restarted.events("a")] == ["submitted", "started", "requeued", "resumed"]
        restarted.close()
    finally:
        for p in holders:
            p.kill()
            p.wait(10)
        store.close()


_REPLICA = """
import sys, time
from pathlib import Path
from ncap.service import jobs
from ncap.service.store import JobStore
store = JobStore(sys.argv[1])
worker = jobs.JobWorker(store, runner="test_service_unit:fake_runner", data_dir=Path(sys.argv[2]), poll_interval_s=0.1)
worker.start()  # takes its data dir's lock, requeues interrupted jobs, then claims
while store.count_jobs("queued") or store.count_jobs("running"):
    time.sleep(0.1)
worker.stop()
"""


def test_two_service_workers_share_a_postgres_store(postgres_url, tmp_path):  # noqa: F811
    """Two replicas' workers (own data dirs, one PostgreSQL store, real training processes ``python -m
    ncap.service.jobs --db URL`` with test_service_unit's fake ranking function): the second one starts while
    the first runs a job, and its start-up requeue leaves that job alone. Every job runs once, to the end."""
    store = JobStore(postgres_url)
    ids = ["j0", "j1"]
    for job_id in ids:
        _new_job(store, tmp_path, ["a"], epochs=1, job_id=job_id)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the trainers import test_service_unit
    replicas = [subprocess.Popen([sys.executable, "-c", _REPLICA, postgres_url, str(tmp_path / "replica0")], env=env)]
    try:
        for _ in range(600):
            if store.count_jobs("running") or store.count_jobs("done"):
                break
            time.sleep(0.05)
        replicas.append(subprocess.Popen([sys.executable, "-c", _REPLICA, postgres_url, str(tmp_path / "replica1")],
                                         env=env))
        assert [p.wait(120) for p in replicas] == [0, 0]
    finally:
        for p in replicas:
            p.kill()
    assert [(j["id"], j["state"], j["attempts"]) for j in sorted(store.list_jobs(), key=lambda j: j["id"])] == [
        (job_id, "done", 1) for job_id in ids]
    assert not any(store.events(job_id, "requeued") for job_id in ids)
    for job_id in ids:  # each trainer wrote its epoch and its candidate into the store
        assert [(e["candidate"], e["detail"]["epoch"]) for e in store.events(job_id, "epoch")] == [("a", 1.0)]
        assert [c["candidate"] for c in store.get_result(job_id)["candidates"]] == ["a"]
    store.close()
