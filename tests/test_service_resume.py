"""kill -9 mid-job, restart, resume: the finished candidate is reused, not retrained, and nothing
finished is lost."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest
from test_service_helpers import Server

pytestmark = pytest.mark.slow

# two labelled copies of the smallest model (~5 s each for 2 epochs): the kill lands while "second" trains
CANDIDATES = ["first:mobilenetv3_small_050=random", "second:mobilenetv3_small_050=random"]


def _db_rows(data_dir, sql, args=()):
    conn = sqlite3.connect(str(data_dir / "jobs.db"), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def test_kill9_restart_resumes_and_reuses_finished_candidates(tmp_path):
    srv = Server(tmp_path, token="resume-token")
    srv.start()
    try:
        r = srv.submit({"candidates": CANDIDATES, "epochs": 2, "image_size": 32})
        assert r.status_code == 200, r.text
        job = r.json()["job_id"]
        first, second = "first", "second"
        status = srv.wait(job, lambda s: s["progress"]["candidates_done"] >= 1
                          or s["state"] not in ("queued", "running"), timeout=180, interval=0.2)
        assert status["state"] == "running" and status["progress"]["candidates_done"] == 1, status
        assert len(srv.tree()) >= 3, "expected server, BentoML worker and training process"
        srv.kill9(whole_tree=True)  # every process at once: no chance to clean up anything
        killed_at = time.time()
    except BaseException:
        srv.stop()
        raise

    # what the dead server left: the job still 'running', the first candidate stored as done
    (job_row,) = _db_rows(srv.data_dir, "SELECT state, attempts FROM jobs WHERE id = ?", (job,))
    assert job_row["state"] == "running" and job_row["attempts"] == 1
    before = {r["name"]: r for r in _db_rows(srv.data_dir, "SELECT * FROM candidates WHERE job_id = ?", (job,))}
    assert before[first]["state"] == "done" and before[second]["state"] != "done", before
    stored_record = json.loads(before[first]["record"])

    srv.start()  # same data dir, new process
    try:
        final = srv.wait(job, timeout=240)
        assert final["state"] == "done", final
        assert final["attempts"] == 2
        assert final["progress"]["candidates_done"] == 2

        after = {r["name"]: r for r in _db_rows(srv.data_dir, "SELECT * FROM candidates WHERE job_id = ?", (job,))}
        # the finished candidate was not retrained: same record, same finish time
        assert after[first]["finished_at"] == before[first]["finished_at"]
        assert after[first]["wall_time"] == before[first]["wall_time"]
        assert json.loads(after[first]["record"]) == stored_record
        assert after[second]["state"] == "done" and after[second]["finished_at"] > killed_at

        events = _db_rows(srv.data_dir, "SELECT ts, kind, candidate FROM events WHERE job_id = ? ORDER BY id", (job,))
        kinds = [e["kind"] for e in events]
        assert "requeued" in kinds and "resumed" in kinds
        assert any(e["kind"] == "candidate_reused" and e["candidate"] == first for e in events)
        late = [e for e in events if e["ts"] > killed_at]
        assert not [e for e in late if e["kind"] == "epoch" and e["candidate"] == first], \
            "the finished candidate was trained again"
        assert [e for e in late if e["kind"] == "epoch" and e["candidate"] == second]

        result = srv.post("/jobs/result", {"job_id": job}).json()["ranking"]
        recs = {c["candidate"]: c for c in result["candidates"]}
        assert recs[first].get("reused") is True and not recs[second].get("reused")
        assert recs[first]["val_accuracy"] == stored_record["val_accuracy"]
        assert recs[first]["beta_eff"] == stored_record["beta_eff"]
        assert sorted(c["rank"] for c in recs.values()) == [1, 2]
    finally:
        srv.stop()


def test_kill9_of_the_main_process_takes_worker_and_trainer_down(tmp_path):
    """`kill -9 <pid of ncap serve>`: BentoML's worker runs in its own session; it must not live on as
    an orphan that keeps the port and the job queue (it shuts down, and its trainer dies with it)."""
    srv = Server(tmp_path, token="orphan-token")
    srv.start()
    try:
        job = srv.submit({"candidates": CANDIDATES[1:], "epochs": 3, "image_size": 32}).json()["job_id"]
        srv.wait(job, lambda s: s["state"] == "running", timeout=120, interval=0.2)
        deadline = time.time() + 30
        while len(srv.tree()) < 3 and time.time() < deadline:  # the trainer process is being spawned
            time.sleep(0.1)
        assert len(srv.tree()) >= 3
        survivors = srv.kill9(whole_tree=False, settle=20)
        assert not survivors, f"processes outlived the killed server: {survivors}"
        (row,) = _db_rows(srv.data_dir, "SELECT state FROM jobs WHERE id = ?", (job,))
        assert row["state"] == "running"  # left for the next server to resume
    finally:
        srv.stop()
