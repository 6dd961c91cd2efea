"""A throwaway PostgreSQL server for the job-store tests, and the ``store_url`` fixture over both backends.

``postgres_server`` (session scope) yields the admin URL of a server on 127.0.0.1:

* ``NCAP_TEST_POSTGRES_URL`` set: that server (its role must be allowed to create databases);
* else a fresh cluster: ``initdb`` into a temporary folder, ``pg_ctl start`` on a free loopback port with
  password authentication and no Unix socket, ``pg_ctl stop -m immediate`` at the end. The binaries come
  from ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so as
  root the server runs as the ``postgres`` user (Debian's package creates it), else as ``nobody``, through
  ``setpriv`` (util-linux).

Without PostgreSQL the PostgreSQL tests skip, saying why, unless ``NCAP_REQUIRE_POSTGRES=1`` (set by
``.ci/run``): then they fail. Each test gets a database of its own (``postgres_url``, ``store_url``).

Use: ``from pg_fixture import postgres_server, postgres_url, store_url  # noqa: F401`` in a test module.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

URL_ENV, REQUIRE_ENV = "NCAP_TEST_POSTGRES_URL", "NCAP_REQUIRE_POSTGRES"


def _bindir() -> Path | None:
    """Folder holding initdb and pg_ctl: pg_config's, else the newest Debian cluster version's."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required here ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server for the store tests: {reason} (set {URL_ENV} or install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:  # the port is free now; a clash before the server binds it fails its start
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: pwd.struct_passwd | None) -> list[str]:
    """Command prefix that drops root for PostgreSQL (which refuses to run as root)."""
    if user is None:
        return []
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    _unavailable("running as root and there is no 'postgres' or 'nobody' user to run the server as")
    return None


def _start_cluster(bindir: Path, root: Path) -> tuple[str, list[str]]:
    """initdb + pg_ctl start in ``root``; returns the admin URL and the stop command."""
    user = _server_user()
    prefix = _run_as(user)
    password = secrets.token_hex(16)
    (root / "pw").write_text(password + "\n")
    if user is not None:
        for path in (root, root / "pw"):
            os.chown(path, user.pw_uid, user.pw_gid)
    data, log = root / "data", root / "server.log"
    init = subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "ncap", f"--pwfile={root / 'pw'}",
                                    "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                          capture_output=True, text=True, check=False, cwd=root)
    if init.returncode:
        _unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k '' -F -c max_connections=200"  # -F: no fsync, a test server
    pg_ctl = prefix + [str(bindir / "pg_ctl"), "-D", str(data)]
    start = subprocess.run(pg_ctl + ["-w", "-t", "60", "-l", str(log), "-o", options, "start"],
                           capture_output=True, text=True, check=False, cwd=root)
    if start.returncode:
        tail = log.read_text()[-800:] if log.exists() else ""
        _unavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {tail}")
    return f"postgresql+psycopg://ncap:{password}@127.0.0.1:{port}/postgres", pg_ctl + ["-m", "immediate", "stop"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL (database ``postgres``) of a PostgreSQL server that the tests may create databases on."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    bindir = _bindir()
    if bindir is None:
        _unavailable("no initdb/pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
    root = Path(tempfile.mkdtemp(prefix="ncap-pg-"))  # not under pytest's tmp dirs: those are private to root
    try:
        url, stop = _start_cluster(bindir, root)  # type: ignore[arg-type]
        try:
            yield url
        finally:
            subprocess.run(stop, capture_output=True, check=False, cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it (closing whatever still uses it)."""
    name = "ncap_test_" + secrets.token_hex(6)
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as db:
        db.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as db:
            db.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database (dropped after the test)."""
    yield from fresh_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A job store URL on each backend: a SQLite file in ``tmp_path``, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")
