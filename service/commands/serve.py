"""`ncap serve`: start the BentoML ranking service (``ncap.service.api:NcapService``).

Equivalent to ``bentoml serve ncap.service.api:NcapService --host H --port P`` with the service settings
checked first; options become ``NCAP_*`` environment variables of the server (see service/config.py).
The token is never taken on the command line (it would show in ``ps``): set ``NCAP_TOKEN`` or put
``token`` in the ``--config`` file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SERVICE = "ncap.service.api:NcapService"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the ranking web service (BentoML)",
        description="Run the ranking service: POST a dataset and candidates, get a ranking back. "
                    "Auth: 'Authorization: Bearer $NCAP_TOKEN' on every route except /healthz, /livez, "
                    "/readyz. Without NCAP_TOKEN only loopback clients are served.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    p.add_argument("--config", type=Path, default=None,
                   help="service settings file (TOML or JSON); NCAP_* environment variables override it")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="uploads, job outputs and the default job database (default ~/.ncap/service)")
    p.add_argument("--db", default=None, help="job store URL: sqlite:////var/lib/ncap/jobs.db (default: jobs.db in the data dir) or postgresql://user@host/db (psycopg 3; the password from PGPASSWORD or ~/.pgpass, never in the URL: it would show in the process list)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest dataset upload (default 200)")
    p.add_argument("--max-job-memory-gb", type=float, default=None,
                   help="per-job memory limit: larger estimates are refused at submit, and the training process "
                        "runs under it (default: 75%% of this machine's memory)")
    p.add_argument("--allow-remote-without-token", action="store_true",
                   help="serve non-loopback clients although no token is configured (unsafe)")
    p.add_argument("--development", action="store_true", help="BentoML development mode (auto-reload off)")
    p.add_argument("--check", action="store_true", help="check the settings and exit without serving")
    p.set_defaults(func=run)


def server_env(args: argparse.Namespace, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` plus the options given on the command line."""
    env = dict(os.environ if base is None else base)
    if args.config is not None:
        env["NCAP_SERVICE_CONFIG"] = str(Path(args.config).expanduser().resolve())
    if args.data_dir is not None:
        env["NCAP_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    if args.db is not None:
        env["NCAP_DB_URL"] = args.db
    if args.max_upload_mb is not None:
        env["NCAP_MAX_UPLOAD_MB"] = str(args.max_upload_mb)
    if args.max_job_memory_gb is not None:
        env["NCAP_MAX_JOB_MEMORY_GB"] = str(args.max_job_memory_gb)
    if args.allow_remote_without_token:
        env["NCAP_ALLOW_REMOTE_WITHOUT_TOKEN"] = "true"
    return env


def command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", args.host, "--port", str(args.port),
           "--working-dir", str(Path(__file__).resolve().parents[2])]
    if args.development:
        cmd.append("--development")
    return cmd


def run(args: argparse.Namespace) -> int:
    from ncap.service.config import SettingsError, load_settings
    from ncap.service.security import InsecureBindError, check_bind
    from ncap.service.store import JobStore, StoreError

    env = server_env(args)
    try:
        settings = load_settings(env)
        check_bind(args.host, settings)
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        JobStore(settings.resolved_db_url).close()
    except (SettingsError, InsecureBindError, StoreError, OSError) as exc:
        print(f"ncap serve: {exc}", file=sys.stderr)
        return 2
    auth = "bearer token" if settings.token else "none (loopback clients only)"
    print(f"ncap serve: http://{args.host}:{args.port}  data dir {settings.resolved_data_dir}  "
          f"store {settings.resolved_db_url}  auth: {auth}  per-job memory limit "
          f"{settings.job_memory_limit_bytes / 2**30:.1f} GB", file=sys.stderr)
    if args.check:
        return 0
    cmd = command(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)  # the server replaces this process (signals reach it directly)
    return 0  # pragma: no cover
