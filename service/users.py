"""Users of the ranking service: API keys, who is asking, and what each user may use.

* **Keys.** ``ncap keys add NAME [--admin]`` makes a key ``ncap_<43 random characters>`` (256 bits from
  :mod:`secrets`), prints it once and stores only its SHA-256 (:func:`hash_key`). A key of that entropy
  cannot be guessed, so a fast hash is enough; a slow password hash (bcrypt, scrypt) would only cost every
  request time. ``ncap keys revoke`` takes effect on the next request: every request looks its key up.
* **Roles.** ``user`` sees, cancels, deletes and downloads only its own jobs (another user's job is a 404,
  as if it did not exist); ``admin`` sees every job and the audit log. The service token (``NCAP_TOKEN``), and
  a loopback client when no token is set, act as the admin named ``admin``: single-token mode is one admin.
* **Quotas** per user: jobs queued or running (``max_queued_jobs_per_user``) and bytes
  (``max_user_gb``: the user's job folders as the disk counts them plus what the store keeps for them), each
  overridable per key. Jobs count until they are deleted, whatever their state.
* **Audit.** Submit, cancel, delete and key changes are written to the store's ``audit`` table.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from ncap.service.store import JobStore

ADMIN, USER = "admin", "user"
ROLES = (ADMIN, USER)
KEY_PREFIX = "ncap_"


@dataclass(frozen=True)
class Principal:
    """Who sends a request: the user's name, role, and the key's own quotas (None = the server's)."""

    name: str
    role: str = USER
    key_id: str | None = None
    max_queued_jobs: int | None = None
    max_bytes: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def owner_filter(self) -> str | None:
        """The owner to filter jobs by: None (every job) for an admin."""
        return None if self.is_admin else self.name


TOKEN_ADMIN = Principal("admin", ADMIN)  # the service token, or a loopback client when no token is set


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_user_name(name: str) -> str:
    """A user name: 1-64 printable characters without spaces or path separators."""
    if not name or len(name) > 64 or not name.isprintable() or any(c in name for c in " /\\"):
        raise ValueError(f"user name {name!r}: use 1-64 printable characters without spaces or slashes")
    return name


def add_key(store: JobStore, user: str, role: str = USER, *, max_queued_jobs: int | None = None,
            max_bytes: int | None = None, actor: str = "cli") -> tuple[str, str]:
    """Create a key for ``user``; returns (key id, the key). The key is shown here once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: choose {' or '.join(ROLES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = secrets.token_hex(4)
    store.add_key(key_id, check_user_name(user), role, hash_key(key), max_queued_jobs=max_queued_jobs,
                  max_bytes=max_bytes)
    store.audit(actor, "key_add", detail={"key_id": key_id, "user": user, "role": role})
    return key_id, key


def revoke(store: JobStore, id_or_user: str, actor: str = "cli") -> list[str]:
    ids = store.revoke_keys(id_or_user)
    if ids:
        store.audit(actor, "key_revoke", detail={"key_ids": ids})
    return ids


def principal_for_key(store: JobStore, key: str) -> Principal | None:
    """The user a presented key belongs to, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = store.key_by_hash(hash_key(key))
    if row is None:
        return None
    return Principal(row["user"], row["role"], row["id"], row["max_queued_jobs"], row["max_bytes"])
