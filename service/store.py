"""Durable job store of the ranking service: jobs, per-candidate results and an event log in SQLite.

The store is the only shared state between the API (which reads it), the worker thread (which claims
jobs) and the training process (which writes each candidate's record the moment it finishes). SQLite
runs in WAL mode, so readers never wait for the writer, and every write is its own committed
transaction: a ``kill -9`` of any of these processes loses at most the epoch in flight, never a finished
candidate.

URLs are parsed by SQLAlchemy (``make_url``) so that another backend can be added behind the same class
interface: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or a plain file path. Only
SQLite is implemented; every other backend (``postgresql://``, ...) is refused with a message saying so.
The SQL is plain (no SQLite-only types), apart from the PRAGMAs and ``BEGIN IMMEDIATE`` used to claim a
job. Stored JSON is strict: NaN and ±inf are written as null (``capacitance.jsonsafe.to_jsonable``).
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ncap.capacitance.jsonsafe import to_jsonable

# job states
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
# candidate states
PENDING, CAND_RUNNING, CAND_DONE, CAND_FAILED = "pending", "running", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    run_started_at REAL,
    config TEXT NOT NULL,
    candidates TEXT NOT NULL,
    dataset_path TEXT,
    dataset_name TEXT,
    dataset_kind TEXT,
    dataset_bytes INTEGER NOT NULL DEFAULT 0,
    out_dir TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    current_candidate TEXT,
    current_epoch REAL,
    epochs_this_run INTEGER NOT NULL DEFAULT 0,
    done_at_start INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_detail TEXT,
    result TEXT,
    trainer_deaths INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at);
CREATE TABLE IF NOT EXISTS candidates (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    epoch REAL,
    started_at REAL,
    finished_at REAL,
    wall_time REAL,
    record TEXT,
    error TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    candidate TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
"""
# columns added after the first release: (table, column, declaration); added to older databases on open
_ADDED_COLUMNS = (
    ("jobs", "trainer_deaths", "INTEGER NOT NULL DEFAULT 0"),
    ("candidates", "crashes", "INTEGER NOT NULL DEFAULT 0"),
)


class StoreError(RuntimeError):
    """The store URL is unusable or the database cannot be opened."""


def sqlite_path_from_url(url: str) -> Path:
    """File path of a ``sqlite:///...`` URL (parsed by SQLAlchemy's ``make_url``) or of a plain path.

    Only SQLite is implemented: any other backend raises :class:`StoreError` saying so, as do an
    in-memory database (not durable) and a URL that does not parse.
    """
    if "://" not in url:
        return Path(url).expanduser()
    from sqlalchemy.engine import make_url  # imported here: only URL parsing is used, not the engine
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot parse job store URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name().lower()
    if backend.startswith("postgres"):
        raise StoreError(
            "PostgreSQL job stores are not implemented yet; only SQLite is: use sqlite:///path.db "
            "(service/store.py keeps to plain SQL so a PostgreSQL backend can implement JobStore)")
    if backend not in ("sqlite", "sqlite3"):
        raise StoreError(f"unsupported job store URL scheme {parsed.drivername!r} in {url!r}: only SQLite is "
                         "implemented (sqlite:///relative.db or sqlite:////abs.db)")
    if parsed.host:
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    if not parsed.database or parsed.database == ":memory:":
        raise StoreError("the job store must be a file (an in-memory database is not durable)")
    return Path(parsed.database).expanduser()


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class JobStore:
    """SQLite job store; one connection per thread, safe to share between threads and processes."""

    def __init__(self, url: str):
        self.url = url
        self.path = sqlite_path_from_url(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._conn().executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open job store {self.path}: {exc}") from exc

    def _add_missing_columns(self) -> None:
        with self._tx() as db:
            for table, column, decl in _ADDED_COLUMNS:
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    # -- connection handling -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    @contextmanager
    def exclusive(self) -> Iterator[set[str]]:
        """Hold the write lock and yield the ids of every job: no job is created or deleted meanwhile, so a
        job folder whose id is not in the set is an orphan."""
        with self._tx() as db:
            yield {r[0] for r in db.execute("SELECT id FROM jobs").fetchall()}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    # -- jobs ----------------------------------------------------------------------------------------
    def create_job(self, job_id: str, *, config: dict, candidates: list[str], out_dir: str | Path,
                   dataset_path: str | None = None, dataset_name: str | None = None,
                   dataset_kind: str | None = None, dataset_bytes: int = 0,
                   on_commit: Callable[[], None] | None = None) -> dict:
        """Insert a queued job. ``on_commit()`` (e.g. moving the job's staged files into place) runs inside
        the same write transaction: if it raises, no row is written; if the process dies during it, the
        row is not committed and whatever it moved is an orphan that :meth:`exclusive` users can see as
        such (no row, and no other process in the middle of a commit)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, state, created_at, updated_at, config, candidates, dataset_path,"
                " dataset_name, dataset_kind, dataset_bytes, out_dir) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, QUEUED, now, now, _dumps(config), _dumps(list(candidates)), dataset_path,
                 dataset_name, dataset_kind, int(dataset_bytes), str(out_dir)))
            for pos, name in enumerate(candidates):
                db.execute("INSERT INTO candidates (job_id, name, position, state) VALUES (?,?,?,?)",
                           (job_id, name, pos, PENDING))
            self._event(db, job_id, "submitted", None, {"candidates": list(candidates)})
            if on_commit is not None:
                on_commit()
        return self.get_job(job_id)  # type: ignore[return-value]

    @staticmethod
    def _job_row(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        job = dict(row)
        job["config"] = _loads(job["config"])
        job["candidates"] = _loads(job["candidates"])
        job["cancel_requested"] = bool(job["cancel_requested"])
        job.pop("result", None)
        return job

    def get_job(self, job_id: str) -> dict | None:
        row = self._conn().execute(
            "SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job_row(row)

    def get_result(self, job_id: str) -> dict | None:
        row = self._conn().execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _loads(row["result"])

    def list_jobs(self, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        sql = "SELECT * FROM jobs"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        args += [int(limit), int(offset)]
        return [self._job_row(r) for r in self._conn().execute(sql, args).fetchall()]  # type: ignore

    def count_jobs(self, state: str | None = None) -> int:
        if state:
            row = self._conn().execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()
        else:
            row = self._conn().execute("SELECT COUNT(*) FROM jobs").fetchone()
        return int(row[0])

    def claim_next(self) -> dict | None:
        """Atomically move the oldest queued job to ``running`` and return it (None if none waits)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = ? AND cancel_requested = 0 "
                             "ORDER BY created_at, id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            job_id = row["id"]
            done = db.execute("SELECT COUNT(*) FROM candidates WHERE job_id = ? AND state IN (?, ?)",
                              (job_id, CAND_DONE, CAND_FAILED)).fetchone()[0]
            db.execute("UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), run_started_at = ?,"
                       " attempts = attempts + 1, epochs_this_run = 0, done_at_start = ?, updated_at = ?"
                       " WHERE id = ?", (RUNNING, now, now, int(done), now, job_id))
            attempts = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            self._event(db, job_id, "started" if attempts == 1 else "resumed", None, {"attempt": attempts})
        return self.get_job(job_id)

    def requeue_interrupted(self) -> list[str]:
        """Jobs left ``running`` by a dead server go back to the queue (called once at start-up)."""
        now = time.time()
        with self._tx() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = ?", (RUNNING,))]
            for job_id in ids:
                db.execute("UPDATE jobs SET state = ?, updated_at = ?, current_candidate = NULL,"
                           " current_epoch = NULL WHERE id = ?", (QUEUED, now, job_id))
                db.execute("UPDATE candidates SET state = ?, epoch = NULL WHERE job_id = ? AND state = ?",
                           (PENDING, job_id, CAND_RUNNING))
                self._event(db, job_id, "requeued", None, {"reason": "server restarted mid-job"})
        return ids

    def finish_job(self, job_id: str, state: str, *, result: dict | None = None, error: str | None = None,
                   error_detail: str | None = None) -> bool:
        """Set a final state; only a job that is not final yet changes. Returns whether it changed."""
        assert state in FINAL_STATES, state
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, result = COALESCE(?, result),"
                " error = ?, error_detail = ?, current_candidate = NULL WHERE id = ? AND state IN (?, ?)",
                (state, now, now, None if result is None else _dumps(result), error, error_detail,
                 job_id, QUEUED, RUNNING))
            changed = cur.rowcount > 0
            if changed:
                if state != DONE:
                    db.execute("UPDATE candidates SET state = ? WHERE job_id = ? AND state = ?",
                               (PENDING, job_id, CAND_RUNNING))
                self._event(db, job_id, state, None, {"error": error} if error else None)
        return changed

    def record_trainer_death(self, job_id: str, reason: str, *, max_candidate_crashes: int = 2,
                             max_restarts: int = 3) -> str | None:
        """The training process of a running job died without a verdict (a signal, the OOM killer, a crash).

        In one transaction: the candidate in flight (see :meth:`in_flight_candidate`) counts one crash and
        is marked ``failed`` with ``reason`` once it has crashed ``max_candidate_crashes`` times; the job
        counts one trainer death and goes back to the queue (finished candidates are reused there), or
        fails after ``max_restarts`` restarts. Returns the job's new state (or its state if not running)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state, trainer_deaths FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != RUNNING:
                return None if row is None else row["state"]
            deaths = int(row["trainer_deaths"]) + 1
            culprit = self._in_flight(db, job_id)
            if culprit is not None:
                crashes = int(db.execute("SELECT crashes FROM candidates WHERE job_id = ? AND name = ?",
                                         (job_id, culprit)).fetchone()[0]) + 1
                db.execute("UPDATE candidates SET crashes = ?, error = ? WHERE job_id = ? AND name = ?",
                           (crashes, reason, job_id, culprit))
                if crashes >= max_candidate_crashes:
                    error = f"{reason}; it stopped the training process {crashes} times"
                    record = {"candidate": culprit, "status": "failed", "error": error}
                    db.execute("UPDATE candidates SET state = ?, finished_at = ?, record = ?, error = ? "
                               "WHERE job_id = ? AND name = ?", (CAND_FAILED, now, _dumps(record), error,
                                                                 job_id, culprit))
                    self._event(db, job_id, "candidate_failed", culprit, {"error": error})
            db.execute("UPDATE candidates SET state = ?, epoch = NULL WHERE job_id = ? AND state = ?",
                       (PENDING, job_id, CAND_RUNNING))
            self._event(db, job_id, "trainer_died", culprit, {"reason": reason, "deaths": deaths})
            if deaths > max_restarts:
                error = f"the training process died {deaths} times; last: {reason}"
                db.execute("UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, error = ?, "
                           "trainer_deaths = ?, current_candidate = NULL WHERE id = ?",
                           (FAILED, now, now, error, deaths, job_id))
                self._event(db, job_id, FAILED, None, {"error": error})
                return FAILED
            db.execute("UPDATE jobs SET state = ?, updated_at = ?, trainer_deaths = ?, current_candidate = NULL,"
                       " current_epoch = NULL WHERE id = ?", (QUEUED, now, deaths, job_id))
            self._event(db, job_id, "requeued", None, {"reason": reason})
            return QUEUED

    @staticmethod
    def _in_flight(db: sqlite3.Connection, job_id: str) -> str | None:
        row = db.execute("SELECT name FROM candidates WHERE job_id = ? AND state = ? ORDER BY position LIMIT 1",
                         (job_id, CAND_RUNNING)).fetchone()
        if row is None:  # candidates run in order: the first one not finished is the one in flight
            row = db.execute("SELECT name FROM candidates WHERE job_id = ? AND state = ? ORDER BY position "
                             "LIMIT 1", (job_id, PENDING)).fetchone()
        return None if row is None else row["name"]

    def in_flight_candidate(self, job_id: str) -> str | None:
        """The candidate a running job is training: the one marked running, else the first one (in order)
        that has not finished."""
        return self._in_flight(self._conn(), job_id)

    def delete_job(self, job_id: str) -> dict | None:
        """Remove a finished job's rows (job, candidates, events) and return the job as it was; the caller
        removes its files. ``None`` if there is no such job; raises ``ValueError`` if it is not final."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] not in FINAL_STATES:
                raise ValueError(f"job {job_id} is {row['state']}; cancel it first")
            for table, key in (("events", "job_id"), ("candidates", "job_id"), ("jobs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {key} = ?", (job_id,))
        return self._job_row(row)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when the database is sound)."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def request_cancel(self, job_id: str) -> str | None:
        """Ask a job to stop. A queued job is cancelled at once; a running one when its trainer sees it.

        Returns the job's state afterwards (None if there is no such job)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = row["state"]
            if state == QUEUED:
                db.execute("UPDATE jobs SET state = ?, cancel_requested = 1, finished_at = ?, updated_at = ?"
                           " WHERE id = ?", (CANCELLED, now, now, job_id))
                self._event(db, job_id, "cancelled", None, {"while": QUEUED})
                return CANCELLED
            if state == RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                self._event(db, job_id, "cancel_requested", None, None)
            return state

    def cancel_requested(self, job_id: str) -> bool:
        row = self._conn().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    # -- candidates ----------------------------------------------------------------------------------
    def candidates(self, job_id: str) -> list[dict]:
        rows = self._conn().execute(
            "SELECT * FROM candidates WHERE job_id = ? ORDER BY position, name", (job_id,)).fetchall()
        out = []
        for r in rows:
            c = dict(r)
            c["record"] = _loads(c["record"])
            out.append(c)
        return out

    def completed_records(self, job_id: str) -> dict[str, dict]:
        """Finished candidates (done or failed) of a job: name -> the record the ranking produced."""
        rows = self._conn().execute(
            "SELECT name, record FROM candidates WHERE job_id = ? AND state IN (?, ?) AND record IS NOT NULL",
            (job_id, CAND_DONE, CAND_FAILED)).fetchall()
        return {r["name"]: _loads(r["record"]) for r in rows}

    def _ensure_candidate(self, db: sqlite3.Connection, job_id: str, name: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM candidates WHERE job_id = ? AND name = ?", (job_id, name)).fetchone()
        if row is None:
            pos = db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM candidates WHERE job_id = ?",
                             (job_id,)).fetchone()[0]
            db.execute("INSERT INTO candidates (job_id, name, position, state) VALUES (?,?,?,?)",
                       (job_id, name, pos, PENDING))
            row = db.execute("SELECT * FROM candidates WHERE job_id = ? AND name = ?",
                             (job_id, name)).fetchone()
        return row

    def record_epoch(self, job_id: str, name: str, epoch: float, metrics: dict | None = None) -> None:
        """A candidate reached ``epoch`` (fractional when evaluated within an epoch): progress for status
        and ETA, and an ``epoch`` event."""
        now = time.time()
        with self._tx() as db:
            row = self._ensure_candidate(db, job_id, name)
            if row["state"] in (CAND_DONE, CAND_FAILED):
                return
            db.execute("UPDATE candidates SET state = ?, epoch = ?, started_at = COALESCE(started_at, ?)"
                       " WHERE job_id = ? AND name = ?", (CAND_RUNNING, float(epoch), now, job_id, name))
            db.execute("UPDATE jobs SET current_candidate = ?, current_epoch = ?,"
                       " epochs_this_run = epochs_this_run + 1, updated_at = ? WHERE id = ?",
                       (name, float(epoch), now, job_id))
            self._event(db, job_id, "epoch", name, {"epoch": float(epoch), "metrics": metrics or {}})

    def mark_candidate_started(self, job_id: str, name: str) -> None:
        now = time.time()
        with self._tx() as db:
            row = self._ensure_candidate(db, job_id, name)
            if row["state"] in (CAND_DONE, CAND_FAILED):
                return
            db.execute("UPDATE candidates SET state = ?, started_at = COALESCE(started_at, ?)"
                       " WHERE job_id = ? AND name = ?", (CAND_RUNNING, now, job_id, name))
            db.execute("UPDATE jobs SET current_candidate = ?, current_epoch = 0, updated_at = ? WHERE id = ?",
                       (name, now, job_id))

    def save_candidate(self, job_id: str, record: dict, *, failed: bool = False) -> bool:
        """Store a finished candidate's record. A candidate already stored as finished is kept as it
        was (its first record and ``finished_at`` win) and False is returned."""
        name = str(record.get("candidate") or record.get("name"))
        now = time.time()
        with self._tx() as db:
            row = self._ensure_candidate(db, job_id, name)
            if row["state"] in (CAND_DONE, CAND_FAILED) and row["record"] is not None:
                self._event(db, job_id, "candidate_kept", name, None)
                return False
            started = row["started_at"]
            wall = record.get("wall_time_s", record.get("wall_time"))
            if not isinstance(wall, (int, float)) or not math.isfinite(wall) or wall <= 0:
                wall = None if started is None else now - started
            state = CAND_FAILED if failed else CAND_DONE
            error = record.get("error") if failed else None
            db.execute("UPDATE candidates SET state = ?, finished_at = ?, wall_time = ?, record = ?, error = ?,"
                       " started_at = COALESCE(started_at, ?) WHERE job_id = ? AND name = ?",
                       (state, now, wall, _dumps(record), None if error is None else str(error),
                        now, job_id, name))
            db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))
            self._event(db, job_id, "candidate_" + state, name, {"wall_time": wall})
        return True

    # -- events --------------------------------------------------------------------------------------
    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, kind: str, candidate: str | None,
               detail: dict | None) -> None:
        db.execute("INSERT INTO events (job_id, ts, kind, candidate, detail) VALUES (?,?,?,?,?)",
                   (job_id, time.time(), kind, candidate, None if detail is None else _dumps(detail)))

    def add_event(self, job_id: str, kind: str, candidate: str | None = None,
                  detail: dict | None = None) -> None:
        with self._tx() as db:
            self._event(db, job_id, kind, candidate, detail)

    def events(self, job_id: str, kind: str | None = None) -> list[dict]:
        sql = "SELECT * FROM events WHERE job_id = ?"
        args: list[Any] = [job_id]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self._conn().execute(sql + " ORDER BY id", args).fetchall()
        out = []
        for r in rows:
            e = dict(r)
            e["detail"] = _loads(e["detail"])
            out.append(e)
        return out
