"""Durable job store of the ranking service: jobs, per-candidate results and an event log, on SQLAlchemy Core.

The store is the only shared state between the API (which reads it), the worker thread (which claims
jobs) and the training process (which writes each candidate's record the moment it finishes). Every write
is its own committed transaction, so a ``kill -9`` of any of these processes never loses a finished
candidate (the candidate in flight restarts from its first epoch). One schema declaration (the ``Table`` objects below) serves both
backends:

* **SQLite** (the embedded default; ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a plain file
  path) runs in WAL mode, so readers never wait for the writer; a write transaction starts with
  ``BEGIN IMMEDIATE``, which takes the database's single write lock up front.
* **PostgreSQL** (``postgresql://user@host/db`` or ``postgresql+psycopg://...``, through psycopg 3) serves
  several API replicas. A write transaction first locks the row of the job it changes (``SELECT ... FOR
  UPDATE``), and :meth:`JobStore.claim_next` takes the oldest queued job with ``FOR UPDATE SKIP LOCKED``,
  so two replicas never claim the same job. A store that claims holds a session-level advisory lock whose
  key it writes into ``claimed_by``; the server drops that lock when the claiming process dies (even by
  ``kill -9``), which is how :meth:`JobStore.requeue_interrupted` tells the jobs of a dead replica from
  those a live replica is still running.

Stored JSON is strict: NaN and ±inf are written as null (``capacitance.jsonsafe.to_jsonable``).
"""
from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ncap.jsonsafe import to_jsonable

# job states
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
# candidate states
PENDING, CAND_RUNNING, CAND_DONE, CAND_FAILED = "pending", "running", "done", "failed"


def _zero() -> sa.TextClause:
    return sa.text("0")


METADATA = sa.MetaData()
JOBS = sa.Table(
    "jobs", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("run_started_at", sa.Double),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("candidates", sa.Text, nullable=False),
    sa.Column("dataset_path", sa.Text),
    sa.Column("dataset_name", sa.Text),
    sa.Column("dataset_kind", sa.Text),
    sa.Column("dataset_bytes", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("out_dir", sa.Text, nullable=False),
    sa.Column("cancel_requested", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("current_candidate", sa.Text),
    sa.Column("current_epoch", sa.Double),
    sa.Column("epochs_this_run", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("done_at_start", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("error", sa.Text),
    sa.Column("error_detail", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("trainer_deaths", sa.Integer, nullable=False, server_default=_zero()),
    sa.Column("claimed_by", sa.Integer),  # PostgreSQL: advisory-lock key of the claiming store
    sa.Column("owner", sa.Text),  # the user (API key name) who submitted it; NULL = the admin of older stores
    sa.Index("jobs_state_created", "state", "created_at"),
)
CANDIDATES = sa.Table(
    "candidates", METADATA,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("epoch", sa.Double),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("wall_time", sa.Double),
    sa.Column("record", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("crashes", sa.Integer, nullable=False, server_default=_zero()),
)
EVENTS = sa.Table(
    "events", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),  # SQLite: INTEGER
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("candidate", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Index("events_job", "job_id", "id"),
    sqlite_autoincrement=True,  # ids are never reused, so event order survives deletions
)
API_KEYS = sa.Table(  # service.users: one row per key; only the key's SHA-256 is stored
    "api_keys", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
    sa.Column("max_queued_jobs", sa.Integer),
    sa.Column("max_bytes", sa.BigInteger),
)
AUDIT = sa.Table(
    "audit", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("job_id", sa.Text),
    sa.Column("detail", sa.Text),
    sqlite_autoincrement=True,
)
# columns added after the first release, added to older databases on open (declared in the tables above)
_ADDED_COLUMNS = (("jobs", "trainer_deaths"), ("candidates", "crashes"), ("jobs", "claimed_by"), ("jobs", "owner"))
# PostgreSQL advisory locks: (namespace, key) pairs; the namespace keeps ncap's keys apart from other users'
_LOCK_NAMESPACE = 0x6E636170  # "ncap"
_SCHEMA_LOCK_KEY = 0  # serialises schema creation by replicas starting at once
# server-side keep-alives of the claiming session: a replica whose host vanished (no FIN) loses its claim
# lock after about idle + interval * count seconds, not after the kernel's default two hours
_CLAIM_SESSION_SETTINGS = ("SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10",
                           "SET tcp_keepalives_count = 3")


class StoreError(RuntimeError):
    """The store URL is unusable or the database cannot be opened."""


def store_url(url: str) -> URL:
    """The SQLAlchemy URL of a job store, validated: a SQLite file, or PostgreSQL through psycopg 3.

    A plain path means a SQLite file. ``postgresql://`` and ``postgres://`` select psycopg 3
    (``postgresql+psycopg://``); other PostgreSQL drivers, other backends, an in-memory SQLite database
    (not durable) and a URL that does not parse raise :class:`StoreError`.
    """
    if "://" not in url:
        return URL.create("sqlite", database=str(Path(url).expanduser()))
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot parse job store URL {url!r}: {exc}") from exc
    backend, _, driver = parsed.drivername.lower().partition("+")  # not get_backend_name(): it loads the dialect
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(f"PostgreSQL job stores use psycopg 3: write postgresql:// or postgresql+psycopg:// "
                             f"instead of {parsed.drivername}://")
        return parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "sqlite3"):
        raise StoreError(f"unsupported job store URL scheme {parsed.drivername!r}: use SQLite (sqlite:///relative.db,"
                         " sqlite:////abs.db) or PostgreSQL (postgresql://user@host/db)")
    if parsed.host:
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    if not parsed.database or parsed.database == ":memory:":
        raise StoreError("the job store must be a file (an in-memory database is not durable)")
    return parsed.set(database=str(Path(parsed.database).expanduser()))


def sqlite_path_from_url(url: str) -> Path:
    """File path of a ``sqlite:///...`` URL or of a plain path (:class:`StoreError` for anything else)."""
    parsed = store_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise StoreError(f"not a SQLite URL: {parsed.render_as_string(hide_password=True)}")
    return Path(parsed.database)  # type: ignore[arg-type]


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """SQLAlchemy's recipe for pysqlite: the driver's own transaction handling is off (autocommit), so the
    store starts its write transactions itself with ``BEGIN IMMEDIATE``."""
    dbapi_conn.isolation_level = None
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _int4(value: int) -> sa.Cast:
    return sa.cast(value, sa.Integer)  # advisory-lock functions take (int4, int4); a bare Python int binds int8


class JobStore:
    """Job store on SQLite or PostgreSQL; safe to share between threads and processes.

    Parameters
    ----------
    url : str
        See :func:`store_url`. ``url`` keeps the string as given, ``display_url`` the URL without password.
    """

    def __init__(self, url: str):
        self.url = url
        parsed = store_url(url)
        self.display_url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.path = Path(parsed.database) if self.is_sqlite else None  # type: ignore[arg-type]
        self._claim_lock = threading.Lock()
        self._claim_conn: Connection | None = None
        self._claim_key: int | None = None
        try:
            if self.is_sqlite:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
                self._engine = sa.create_engine(parsed, connect_args={"timeout": 30.0, "check_same_thread": False},
                                                pool_size=8, max_overflow=56)  # ~ one per API thread, as before
                sa.event.listen(self._engine, "connect", _sqlite_on_connect)
                self._reader = self._engine
            else:
                self._engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
                self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
            self._create_schema()
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open job store {self.display_url}: {exc}") from exc

    def _create_schema(self) -> None:
        with self._tx() as db:
            if not self.is_sqlite:
                db.execute(sa.select(sa.func.pg_advisory_xact_lock(_int4(_LOCK_NAMESPACE), _int4(_SCHEMA_LOCK_KEY))))
            METADATA.create_all(db)
            self._add_missing_columns(db)

    @staticmethod
    def _add_missing_columns(db: Connection) -> None:
        inspector = sa.inspect(db)
        for table, column in _ADDED_COLUMNS:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                decl = sa.schema.CreateColumn(METADATA.tables[table].c[column]).compile(dialect=db.dialect)
                db.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {decl}"))

    # -- connection handling -------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One committed write transaction (SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._engine.connect() as db:
            if self.is_sqlite:
                db.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    def _read(self, stmt: sa.Executable) -> list[sa.RowMapping]:
        with self._reader.connect() as db:
            return list(db.execute(stmt).mappings())

    def _read_scalar(self, stmt: sa.Executable) -> Any:
        with self._reader.connect() as db:
            return db.scalar(stmt)

    @staticmethod
    def _lock_job(db: Connection, job_id: str) -> sa.RowMapping | None:
        """The job's row, locked until the transaction ends (PostgreSQL; SQLite's write lock covers it)."""
        return db.execute(sa.select(JOBS).where(JOBS.c.id == job_id).with_for_update()).mappings().first()

    @contextmanager
    def exclusive(self) -> Iterator[set[str]]:
        """Hold the write lock and yield the ids of every job: no job is created or deleted meanwhile, so a
        job folder whose id is not in the set is an orphan. (PostgreSQL: a SHARE lock on ``jobs``, which
        waits for and blocks every write to that table but no reader.)"""
        with self._tx() as db:
            if not self.is_sqlite:
                db.exec_driver_sql("LOCK TABLE jobs IN SHARE MODE")
            yield set(db.execute(sa.select(JOBS.c.id)).scalars())

    def close(self) -> None:
        """Close every connection; a store that had claimed jobs releases its claim lock with it."""
        with self._claim_lock:
            if self._claim_conn is not None:
                self._claim_conn.close()
                self._claim_conn = None
        self._engine.dispose()

    def ping(self) -> bool:
        try:
            return self._read_scalar(sa.select(sa.literal(1))) == 1
        except SQLAlchemyError:
            return False

    # -- claims (PostgreSQL) -------------------------------------------------------------------------
    def _claimer(self) -> int | None:
        """This store's claim key: a session-level advisory lock held on a connection of its own for as
        long as the store lives (None on SQLite). Taken on first use, and again if that connection broke."""
        if self.is_sqlite:
            return None
        with self._claim_lock:
            if self._claim_conn is not None:
                try:
                    self._claim_conn.exec_driver_sql("SELECT 1")
                except SQLAlchemyError:
                    self._claim_conn.invalidate()
                    self._claim_conn = None
            if self._claim_conn is None:
                conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                for setting in _CLAIM_SESSION_SETTINGS:
                    conn.exec_driver_sql(setting)
                key = self._claim_key or random.randrange(1, 2**31)
                while not conn.scalar(sa.select(sa.func.pg_try_advisory_lock(_int4(_LOCK_NAMESPACE), _int4(key)))):
                    key = random.randrange(1, 2**31)  # held by another store (a one-in-2**31 clash): draw again
                self._claim_conn, self._claim_key = conn, key
            return self._claim_key

    @staticmethod
    def _claimer_alive(db: Connection, key: int | None) -> bool:
        """Whether the store that claimed a job still holds its claim lock (SQLite, unknown claimer: no)."""
        if db.dialect.name == "sqlite" or key is None:
            return False
        free = db.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(_int4(_LOCK_NAMESPACE), _int4(key))))
        return not free

    # -- jobs ----------------------------------------------------------------------------------------
    def create_job(self, job_id: str, *, config: dict, candidates: list[str], out_dir: str | Path,
                   dataset_path: str | None = None, dataset_name: str | None = None,
                   dataset_kind: str | None = None, dataset_bytes: int = 0, owner: str | None = None,
                   on_commit: Callable[[], None] | None = None) -> dict:
        """Insert a queued job. ``on_commit()`` (e.g. moving the job's staged files into place) runs inside
        the same write transaction: if it raises, no row is written; if the process dies during it, the
        row is not committed and whatever it moved is an orphan that :meth:`exclusive` users can see as
        such (no row, and no other process in the middle of a commit)."""
        now = time.time()
        with self._tx() as db:
            db.execute(sa.insert(JOBS).values(
                id=job_id, state=QUEUED, created_at=now, updated_at=now, config=_dumps(config),
                candidates=_dumps(list(candidates)), dataset_path=dataset_path, dataset_name=dataset_name,
                dataset_kind=dataset_kind, dataset_bytes=int(dataset_bytes), out_dir=str(out_dir), owner=owner))
            if candidates:
                db.execute(sa.insert(CANDIDATES), [{"job_id": job_id, "name": name, "position": pos, "state": PENDING}
                                                   for pos, name in enumerate(candidates)])
            self._event(db, job_id, "submitted", None, {"candidates": list(candidates)})
            if on_commit is not None:
                on_commit()
        return self.get_job(job_id)  # type: ignore[return-value]

    @staticmethod
    def _job_row(row: sa.RowMapping | None) -> dict | None:
        if row is None:
            return None
        job = dict(row)
        job["config"] = _loads(job["config"])
        job["candidates"] = _loads(job["candidates"])
        job["cancel_requested"] = bool(job["cancel_requested"])
        job.pop("result", None)
        job.pop("claimed_by", None)
        return job

    def get_job(self, job_id: str) -> dict | None:
        rows = self._read(sa.select(JOBS).where(JOBS.c.id == job_id))
        return self._job_row(rows[0] if rows else None)

    def get_result(self, job_id: str) -> dict | None:
        rows = self._read(sa.select(JOBS.c.result).where(JOBS.c.id == job_id))
        return _loads(rows[0]["result"]) if rows else None

    @staticmethod
    def _where(stmt, state: str | None, owner: str | None):
        if state:
            stmt = stmt.where(JOBS.c.state == state)
        if owner is not None:
            stmt = stmt.where(JOBS.c.owner == owner)
        return stmt

    def list_jobs(self, state: str | None = None, limit: int = 50, offset: int = 0, *,
                  owner: str | None = None) -> list[dict]:
        """Jobs newest first, of one ``state`` and one ``owner`` when given."""
        stmt = self._where(sa.select(JOBS), state, owner)
        stmt = stmt.order_by(JOBS.c.created_at.desc(), JOBS.c.id).limit(int(limit)).offset(int(offset))
        return [self._job_row(r) for r in self._read(stmt)]  # type: ignore[misc]

    def count_jobs(self, state: str | tuple[str, ...] | None = None, *, owner: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(JOBS)
        if isinstance(state, tuple):
            stmt, state = stmt.where(JOBS.c.state.in_(state)), None
        return int(self._read_scalar(self._where(stmt, state, owner)))

    def stored_bytes_of(self, job_id: str) -> int:
        """:meth:`stored_bytes` of one job."""
        return self._stored_bytes(JOBS.c.id == job_id)

    def job_ids(self, owner: str | None = None) -> list[str]:
        return [r["id"] for r in self._read(self._where(sa.select(JOBS.c.id), None, owner))]

    def stored_bytes(self, owner: str | None = None) -> int:
        """Bytes of text this store keeps for the jobs (of ``owner``): configs, results, candidate records,
        events. The service counts them against quotas with the jobs' files."""
        return self._stored_bytes(None if owner is None else JOBS.c.owner == owner)

    def _stored_bytes(self, which) -> int:
        length, zero = sa.func.length, lambda col: sa.func.coalesce(sa.func.length(col), 0)
        total = lambda expr: sa.select(sa.func.coalesce(sa.func.sum(expr), 0))
        ids = sa.select(JOBS.c.id)
        jobs = total(length(JOBS.c.config) + length(JOBS.c.candidates) + zero(JOBS.c.result) + zero(JOBS.c.error))
        if which is not None:
            ids, jobs = ids.where(which), jobs.where(which)
        cands = total(zero(CANDIDATES.c.record)).where(CANDIDATES.c.job_id.in_(ids))
        events = total(zero(EVENTS.c.detail) + 64).where(EVENTS.c.job_id.in_(ids))
        return sum(int(self._read_scalar(q)) for q in (jobs, cands, events))

    def claim_next(self) -> dict | None:
        """Atomically move the oldest queued job to ``running`` and return it (None if none waits).

        Exclusive across processes: SQLite's write lock, or PostgreSQL's ``FOR UPDATE SKIP LOCKED`` (a
        replica skips the job another replica is claiming and takes the next one)."""
        claimer = self._claimer()
        now = time.time()
        with self._tx() as db:
            job_id = db.scalar(
                sa.select(JOBS.c.id).where(JOBS.c.state == QUEUED, JOBS.c.cancel_requested == 0)
                .order_by(JOBS.c.created_at, JOBS.c.id).limit(1).with_for_update(skip_locked=True))
            if job_id is None:
                return None
            done = db.scalar(sa.select(sa.func.count()).select_from(CANDIDATES).where(
                CANDIDATES.c.job_id == job_id, CANDIDATES.c.state.in_((CAND_DONE, CAND_FAILED))))
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(
                state=RUNNING, started_at=sa.func.coalesce(JOBS.c.started_at, now), run_started_at=now,
                attempts=JOBS.c.attempts + 1, epochs_this_run=0, done_at_start=int(done), updated_at=now,
                claimed_by=claimer))
            attempts = db.scalar(sa.select(JOBS.c.attempts).where(JOBS.c.id == job_id))
            self._event(db, job_id, "started" if attempts == 1 else "resumed", None, {"attempt": attempts})
        return self.get_job(job_id)

    def requeue_interrupted(self) -> list[str]:
        """Jobs left ``running`` by a dead server go back to the queue (called once at start-up).

        On SQLite every running job is such a job (one server owns the queue). On PostgreSQL only the jobs
        whose claiming store has lost its claim lock are: those of live replicas keep running."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute(sa.select(JOBS.c.id, JOBS.c.claimed_by).where(JOBS.c.state == RUNNING)
                              .order_by(JOBS.c.id).with_for_update()).all()
            ids = [job_id for job_id, claimer in rows if not self._claimer_alive(db, claimer)]
            for job_id in ids:
                db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(
                    state=QUEUED, updated_at=now, current_candidate=None, current_epoch=None))
                self._unmark_running(db, job_id)
                self._event(db, job_id, "requeued", None, {"reason": "server restarted mid-job"})
        return ids

    @staticmethod
    def _unmark_running(db: Connection, job_id: str) -> None:
        db.execute(sa.update(CANDIDATES).where(CANDIDATES.c.job_id == job_id, CANDIDATES.c.state == CAND_RUNNING)
                   .values(state=PENDING, epoch=None))

    def finish_job(self, job_id: str, state: str, *, result: dict | None = None, error: str | None = None,
                   error_detail: str | None = None) -> bool:
        """Set a final state; only a job that is not final yet changes. Returns whether it changed."""
        assert state in FINAL_STATES, state
        now = time.time()
        with self._tx() as db:
            changed = db.execute(
                sa.update(JOBS).where(JOBS.c.id == job_id, JOBS.c.state.in_((QUEUED, RUNNING))).values(
                    state=state, finished_at=now, updated_at=now, error=error, error_detail=error_detail,
                    result=JOBS.c.result if result is None else _dumps(result), current_candidate=None)
            ).rowcount > 0
            if changed:
                if state != DONE:
                    db.execute(sa.update(CANDIDATES).where(CANDIDATES.c.job_id == job_id,
                                                           CANDIDATES.c.state == CAND_RUNNING).values(state=PENDING))
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
            row = self._lock_job(db, job_id)
            if row is None or row["state"] != RUNNING:
                return None if row is None else row["state"]
            deaths = int(row["trainer_deaths"]) + 1
            culprit = self._in_flight(db, job_id)
            if culprit is not None:
                self._count_crash(db, job_id, culprit, reason, max_candidate_crashes, now)
            self._unmark_running(db, job_id)
            self._event(db, job_id, "trainer_died", culprit, {"reason": reason, "deaths": deaths})
            job = sa.update(JOBS).where(JOBS.c.id == job_id)
            if deaths > max_restarts:
                error = f"the training process died {deaths} times; last: {reason}"
                db.execute(job.values(state=FAILED, finished_at=now, updated_at=now, error=error,
                                      trainer_deaths=deaths, current_candidate=None))
                self._event(db, job_id, FAILED, None, {"error": error})
                return FAILED
            db.execute(job.values(state=QUEUED, updated_at=now, trainer_deaths=deaths, current_candidate=None,
                                  current_epoch=None))
            self._event(db, job_id, "requeued", None, {"reason": reason})
            return QUEUED

    def _count_crash(self, db: Connection, job_id: str, name: str, reason: str, max_crashes: int,
                     now: float) -> None:
        """One more crash of a candidate; at ``max_crashes`` it is failed with ``reason``."""
        this = (CANDIDATES.c.job_id == job_id) & (CANDIDATES.c.name == name)
        crashes = int(db.scalar(sa.select(CANDIDATES.c.crashes).where(this))) + 1
        db.execute(sa.update(CANDIDATES).where(this).values(crashes=crashes, error=reason))
        if crashes >= max_crashes:
            error = f"{reason}; it stopped the training process {crashes} times"
            record = {"candidate": name, "status": "failed", "error": error}
            db.execute(sa.update(CANDIDATES).where(this).values(state=CAND_FAILED, finished_at=now,
                                                                record=_dumps(record), error=error))
            self._event(db, job_id, "candidate_failed", name, {"error": error})

    @staticmethod
    def _in_flight(db: Connection, job_id: str) -> str | None:
        # candidates run in order: the one marked running, else the first one not finished, is in flight
        for state in (CAND_RUNNING, PENDING):
            name = db.scalar(sa.select(CANDIDATES.c.name).where(CANDIDATES.c.job_id == job_id,
                                                                 CANDIDATES.c.state == state)
                             .order_by(CANDIDATES.c.position).limit(1))
            if name is not None:
                return name
        return None

    def in_flight_candidate(self, job_id: str) -> str | None:
        """The candidate a running job is training: the one marked running, else the first one (in order)
        that has not finished."""
        with self._reader.connect() as db:
            return self._in_flight(db, job_id)

    def delete_job(self, job_id: str) -> dict | None:
        """Remove a finished job's rows (job, candidates, events) and return the job as it was; the caller
        removes its files. ``None`` if there is no such job; raises ``ValueError`` if it is not final."""
        with self._tx() as db:
            row = self._lock_job(db, job_id)
            if row is None:
                return None
            if row["state"] not in FINAL_STATES:
                raise ValueError(f"job {job_id} is {row['state']}; cancel it first")
            for column in (EVENTS.c.job_id, CANDIDATES.c.job_id, JOBS.c.id):
                db.execute(sa.delete(column.table).where(column == job_id))
        return self._job_row(row)

    def integrity_check(self) -> str:
        """"ok" when the database is sound: SQLite's ``PRAGMA integrity_check``; on PostgreSQL (which checks
        its own pages, and has no such statement) whether the store's tables are there and readable."""
        with self._reader.connect() as db:
            if self.is_sqlite:
                return str(db.exec_driver_sql("PRAGMA integrity_check").scalar())
            missing = sorted(set(METADATA.tables) - set(sa.inspect(db).get_table_names()))
            if missing:
                return "missing tables: " + ", ".join(missing)
            for table in METADATA.sorted_tables:
                db.execute(sa.select(sa.func.count()).select_from(table))
            return "ok"

    def request_cancel(self, job_id: str) -> str | None:
        """Ask a job to stop. A queued job is cancelled at once; a running one when its trainer sees it.

        Returns the job's state afterwards (None if there is no such job)."""
        now = time.time()
        with self._tx() as db:
            row = self._lock_job(db, job_id)
            if row is None:
                return None
            state, job = row["state"], sa.update(JOBS).where(JOBS.c.id == job_id)
            if state == QUEUED:
                db.execute(job.values(state=CANCELLED, cancel_requested=1, finished_at=now, updated_at=now))
                self._event(db, job_id, "cancelled", None, {"while": QUEUED})
                return CANCELLED
            if state == RUNNING:
                db.execute(job.values(cancel_requested=1, updated_at=now))
                self._event(db, job_id, "cancel_requested", None, None)
            return state

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self._read_scalar(sa.select(JOBS.c.cancel_requested).where(JOBS.c.id == job_id)))

    # -- candidates ----------------------------------------------------------------------------------
    def candidates(self, job_id: str) -> list[dict]:
        rows = self._read(sa.select(CANDIDATES).where(CANDIDATES.c.job_id == job_id)
                          .order_by(CANDIDATES.c.position, CANDIDATES.c.name))
        return [{**r, "record": _loads(r["record"])} for r in rows]

    def completed_records(self, job_id: str) -> dict[str, dict]:
        """Finished candidates (done or failed) of a job: name -> the record the ranking produced."""
        rows = self._read(sa.select(CANDIDATES.c.name, CANDIDATES.c.record).where(
            CANDIDATES.c.job_id == job_id, CANDIDATES.c.state.in_((CAND_DONE, CAND_FAILED)),
            CANDIDATES.c.record.is_not(None)))
        return {r["name"]: _loads(r["record"]) for r in rows}

    def _ensure_candidate(self, db: Connection, job_id: str, name: str) -> sa.RowMapping:
        """The candidate's row, inserted (pending, last) if the job did not list it. Locks the job's row
        first, so that writers of one job queue up on PostgreSQL as they do on SQLite's write lock."""
        self._lock_job(db, job_id)
        this = sa.select(CANDIDATES).where(CANDIDATES.c.job_id == job_id, CANDIDATES.c.name == name)
        row = db.execute(this).mappings().first()
        if row is None:
            pos = db.scalar(sa.select(sa.func.coalesce(sa.func.max(CANDIDATES.c.position) + 1, 0))
                            .where(CANDIDATES.c.job_id == job_id))
            db.execute(sa.insert(CANDIDATES).values(job_id=job_id, name=name, position=pos, state=PENDING))
            row = db.execute(this).mappings().one()
        return row

    def record_epoch(self, job_id: str, name: str, epoch: float, metrics: dict | None = None) -> None:
        """A candidate reached ``epoch`` (fractional when evaluated within an epoch): progress for status
        and ETA, and an ``epoch`` event."""
        now = time.time()
        with self._tx() as db:
            row = self._ensure_candidate(db, job_id, name)
            if row["state"] in (CAND_DONE, CAND_FAILED):
                return
            db.execute(sa.update(CANDIDATES).where(CANDIDATES.c.job_id == job_id, CANDIDATES.c.name == name).values(
                state=CAND_RUNNING, epoch=float(epoch), started_at=sa.func.coalesce(CANDIDATES.c.started_at, now)))
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(
                current_candidate=name, current_epoch=float(epoch), epochs_this_run=JOBS.c.epochs_this_run + 1,
                updated_at=now))
            self._event(db, job_id, "epoch", name, {"epoch": float(epoch), "metrics": metrics or {}})

    def mark_candidate_started(self, job_id: str, name: str) -> None:
        now = time.time()
        with self._tx() as db:
            row = self._ensure_candidate(db, job_id, name)
            if row["state"] in (CAND_DONE, CAND_FAILED):
                return
            db.execute(sa.update(CANDIDATES).where(CANDIDATES.c.job_id == job_id, CANDIDATES.c.name == name).values(
                state=CAND_RUNNING, started_at=sa.func.coalesce(CANDIDATES.c.started_at, now)))
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(
                current_candidate=name, current_epoch=0, updated_at=now))

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
            db.execute(sa.update(CANDIDATES).where(CANDIDATES.c.job_id == job_id, CANDIDATES.c.name == name).values(
                state=state, finished_at=now, wall_time=wall, record=_dumps(record),
                error=None if error is None else str(error), started_at=sa.func.coalesce(CANDIDATES.c.started_at, now)))
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(updated_at=now))
            self._event(db, job_id, "candidate_" + state, name, {"wall_time": wall})
        return True

    # -- events --------------------------------------------------------------------------------------
    @staticmethod
    def _event(db: Connection, job_id: str, kind: str, candidate: str | None, detail: dict | None) -> None:
        db.execute(sa.insert(EVENTS).values(job_id=job_id, ts=time.time(), kind=kind, candidate=candidate,
                                            detail=None if detail is None else _dumps(detail)))

    def add_event(self, job_id: str, kind: str, candidate: str | None = None,
                  detail: dict | None = None) -> None:
        with self._tx() as db:
            self._event(db, job_id, kind, candidate, detail)

    def events(self, job_id: str, kind: str | None = None) -> list[dict]:
        stmt = sa.select(EVENTS).where(EVENTS.c.job_id == job_id)
        if kind:
            stmt = stmt.where(EVENTS.c.kind == kind)
        return [{**r, "detail": _loads(r["detail"])} for r in self._read(stmt.order_by(EVENTS.c.id))]

    # -- API keys and the audit log (service.users) --------------------------------------------------
    def add_key(self, key_id: str, user: str, role: str, key_hash: str, *, max_queued_jobs: int | None = None,
                max_bytes: int | None = None) -> None:
        with self._tx() as db:
            db.execute(sa.insert(API_KEYS).values(id=key_id, user=user, role=role, key_hash=key_hash,
                                                  created_at=time.time(), max_queued_jobs=max_queued_jobs,
                                                  max_bytes=max_bytes))

    def keys(self) -> list[dict]:
        """Every key (revoked ones too), oldest first, without its hash."""
        rows = self._read(sa.select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.id))
        return [{k: v for k, v in r.items() if k != "key_hash"} for r in rows]

    def key_by_hash(self, key_hash: str) -> dict | None:
        """The live (not revoked) key with this hash."""
        rows = self._read(sa.select(API_KEYS).where(API_KEYS.c.key_hash == key_hash, API_KEYS.c.revoked_at.is_(None)))
        return dict(rows[0]) if rows else None

    def revoke_keys(self, id_or_user: str) -> list[str]:
        """Revoke the key with this id, or every live key of this user; returns the ids revoked."""
        with self._tx() as db:
            match = sa.or_(API_KEYS.c.id == id_or_user, API_KEYS.c.user == id_or_user)
            ids = list(db.scalars(sa.select(API_KEYS.c.id).where(match, API_KEYS.c.revoked_at.is_(None))))
            if ids:
                db.execute(sa.update(API_KEYS).where(API_KEYS.c.id.in_(ids)).values(revoked_at=time.time()))
        return ids

    def audit(self, actor: str, action: str, job_id: str | None = None, detail: dict | None = None) -> None:
        with self._tx() as db:
            db.execute(sa.insert(AUDIT).values(ts=time.time(), actor=actor, action=action, job_id=job_id,
                                               detail=None if detail is None else _dumps(detail)))

    def audit_log(self, limit: int = 100, actor: str | None = None) -> list[dict]:
        """Audit entries, newest first."""
        stmt = sa.select(AUDIT)
        if actor is not None:
            stmt = stmt.where(AUDIT.c.actor == actor)
        rows = self._read(stmt.order_by(AUDIT.c.id.desc()).limit(int(limit)))
        return [{**r, "detail": _loads(r["detail"])} for r in rows]
