"""`ncap keys`: API keys of the ranking service's users (service.users), and its audit log.

The keys live in the service's job store: the same ``--data-dir`` / ``--db`` as ``ncap serve`` (or their
``NCAP_DATA_DIR`` / ``NCAP_DB_URL`` settings). Changes take effect on the next request; no restart."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "keys", help="add, list or revoke the service's API keys; show its audit log",
        description="API keys of the ranking service: each user sees only their own jobs (an admin sees all). "
                    "The key is printed once; the store keeps only its SHA-256. Revocation works at once.")
    p.add_argument("--data-dir", type=Path, default=None, help="the service's data dir (as for `ncap serve`)")
    p.add_argument("--db", default=None, help="the service's job store URL (as for `ncap serve`)")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make a key for a user and print it once")
    add.add_argument("user", help="user name: 1-64 printable characters, no spaces or slashes")
    add.add_argument("--admin", action="store_true", help="an admin sees and manages every user's jobs")
    add.add_argument("--max-queued", type=int, default=None, metavar="N",
                     help="jobs this key's user may have queued or running [default: max_queued_jobs_per_user]")
    add.add_argument("--max-gb", type=float, default=None, metavar="GB",
                     help="bytes this key's user's jobs may take [default: max_user_gb]")
    add.add_argument("--json", action="store_true", help="print {key_id, user, role, key} as JSON")
    add.set_defaults(func=_guarded(_add), parser=add)
    ls = sub.add_parser("list", help="list keys (id, user, role, created, revoked); never the keys themselves")
    ls.set_defaults(func=_guarded(_list), parser=ls)
    rv = sub.add_parser("revoke", help="revoke a key by its id, or every key of a user")
    rv.add_argument("key", metavar="ID_OR_USER")
    rv.set_defaults(func=_guarded(_revoke), parser=rv)
    au = sub.add_parser("audit", help="show the audit log (submit, cancel, delete, key changes), newest first")
    au.add_argument("--user", default=None, help="only this user's entries")
    au.add_argument("--limit", type=int, default=50)
    au.set_defaults(func=_guarded(_audit), parser=au)


def _store(args):
    from ncap.service.config import load_settings
    from ncap.service.store import JobStore

    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("db_url", args.db)) if v is not None}
    settings = load_settings().model_copy(update=overrides)
    return JobStore(settings.resolved_db_url)


def _guarded(action):
    """Run ``action(args, store, parser)``; an unusable store or setting exits 2 with the reason."""

    def run(args) -> int:
        from ncap.service.config import SettingsError
        from ncap.service.store import StoreError

        try:
            store = _store(args)
        except (SettingsError, StoreError, ValueError) as exc:
            args.parser.error(str(exc))
        try:
            return action(args, store, args.parser)
        finally:
            store.close()

    return run


def _actor() -> str:
    """Who changes keys from the command line, for the audit log."""
    import getpass

    return f"cli:{getpass.getuser()}"


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _add(args, store, parser) -> int:
    from ncap.service.users import ADMIN, USER, add_key

    for flag, value in (("--max-queued", args.max_queued), ("--max-gb", args.max_gb)):
        if value is not None and value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    max_bytes = None if args.max_gb is None else int(args.max_gb * 1024**3)
    try:
        key_id, key = add_key(store, args.user, ADMIN if args.admin else USER, max_queued_jobs=args.max_queued,
                              max_bytes=max_bytes, actor=_actor())
    except ValueError as exc:
        parser.error(str(exc))
    role = ADMIN if args.admin else USER
    if args.json:
        print(json.dumps({"key_id": key_id, "user": args.user, "role": role, "key": key}))
    else:
        print(f"key {key_id} for {args.user} ({role}); send it as 'Authorization: Bearer <key>'. "
              f"It is shown only now:\n{key}")
    return 0


def _list(args, store, parser) -> int:
    keys = store.keys()
    print(f"{'id':10s} {'user':20s} {'role':6s} {'created':19s}  {'revoked':19s}  quotas")
    for k in keys:
        quotas = ", ".join(f"{name} {k[name]}" for name in ("max_queued_jobs", "max_bytes") if k[name] is not None)
        print(f"{k['id']:10s} {k['user']:20s} {k['role']:6s} {_when(k['created_at']):19s}  "
              f"{_when(k['revoked_at']):19s}  {quotas or '-'}")
    return 0


def _revoke(args, store, parser) -> int:
    from ncap.service.users import revoke

    ids = revoke(store, args.key, actor=_actor())
    if not ids:
        parser.error(f"no live key with id or user {args.key!r} (`ncap keys list`)")
    print(f"revoked {', '.join(ids)}")
    return 0


def _audit(args, store, parser) -> int:
    for e in store.audit_log(args.limit, actor=args.user):
        detail = "" if e["detail"] is None else json.dumps(e["detail"])
        print(f"{_when(e['ts'])}  {e['actor']:20s} {e['action']:11s} {e['job_id'] or '-':32s} {detail}")
    return 0
