"""Access control and request limits of the ranking service (archive contents are checked by
``models.archive``).

* ``GuardMiddleware`` (ASGI), in front of every route:
  - ``/healthz``, ``/livez``, ``/readyz`` are open;
  - every other route needs ``Authorization: Bearer <token>`` when a token is configured (``NCAP_TOKEN``),
    compared in constant time; otherwise 401;
  - with no token configured, only loopback clients are served (403 for others) unless
    ``allow_remote_without_token`` is set;
  - request bodies are limited (``max_upload_mb`` for ``/jobs/submit``, ``max_request_kb`` elsewhere):
    413 from ``Content-Length`` before anything is read, and again while streaming for chunked bodies.
* ``check_bind``: refuses to serve on a non-loopback address without a token (used by ``ncap serve``
  before starting, and by the service at start-up on the socket it was actually given).
* Request bodies, read by the routes' input models: :func:`read_json_body` (a JSON route's body, bounded)
  and :func:`read_submit_form` (the ``/jobs/submit`` multipart body, parsed as a stream with
  ``python-multipart``: the file part is written straight into a staging folder, never held in memory,
  and a body without a boundary, with an unknown or repeated field, or without its closing boundary is
  a 400 naming the problem).
* Upload checks that are not archive checks: file type and magic bytes, size, data-dir quota.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ncap.service.config import ServiceSettings

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
DOCS_PATHS = frozenset({"/docs", "/docs.json", "/schema.json"})  # /docs: BentoML's Swagger page (its "/")
DOCS_PREFIXES = ("/static_content/", "/assets/")
UPLOAD_PATHS = frozenset({"/jobs/submit"})
DATASET_SUFFIXES = (".npz", ".zip")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
MAX_BOUNDARY = 70  # RFC 2046, section 5.1.1


class Rejected(ValueError):
    """A request is refused: ``status`` (4xx) and a message that names the problem."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.message, **self.extra}


class InsecureBindError(RuntimeError):
    """Serving beyond loopback without a token was not explicitly allowed."""


# ---------------------------------------------------------------------------------------------- hosts
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: ServiceSettings) -> None:
    """Raise ``InsecureBindError`` when ``host`` is not loopback and no token is configured."""
    if settings.token or settings.allow_remote_without_token or is_loopback(host):
        return
    raise InsecureBindError(
        f"refusing to serve on {host}: no token is configured, so anyone who can reach this address could "
        "submit jobs. Set NCAP_TOKEN (or 'token' in the service config), bind to 127.0.0.1, or set "
        "NCAP_ALLOW_REMOTE_WITHOUT_TOKEN=1 / --allow-remote-without-token to accept the risk.")


def bound_hosts(argv: Iterable[str] | None = None) -> list[str]:
    """Addresses of the listening sockets handed to this BentoML worker (``--fd N`` on its command line).

    Empty when not running under ``bentoml serve`` (e.g. in-process test clients)."""
    argv = list(sys.argv if argv is None else argv)
    hosts = []
    for i, arg in enumerate(argv):
        fd = None
        if arg == "--fd" and i + 1 < len(argv):
            fd = argv[i + 1]
        elif arg.startswith("--fd="):
            fd = arg.split("=", 1)[1]
        if fd is None or not fd.isdigit():
            continue
        try:
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            addr = sock.getsockname()
            if isinstance(addr, tuple):
                hosts.append(str(addr[0]))
        except OSError:
            pass
        finally:
            sock.close()
    return hosts


FORWARDING_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def forwarded_addresses(headers: Iterable[tuple[bytes, bytes]]) -> list[str] | None:
    """The client addresses named by the forwarding headers of a request (``Forwarded: for=...``,
    ``X-Forwarded-For``, ``X-Real-IP``), or None when it carries none of them. Unparsable entries are kept
    as given (they are then not loopback, so they are refused)."""
    found: list[str] | None = None
    for name, value in headers:
        name = name.lower()
        if name not in FORWARDING_HEADERS:
            continue
        found = found or []
        text = value.decode("latin-1")
        if name == b"forwarded":
            for element in text.replace(",", ";").split(";"):
                key, _, val = element.strip().partition("=")
                if key.strip().lower() == "for":
                    found.append(_bare_address(val))
        else:
            found += [_bare_address(v) for v in text.split(",") if v.strip()]
    return found


def _bare_address(value: str) -> str:
    """'"[::1]:8080"' -> '::1', '127.0.0.1:80' -> '127.0.0.1'."""
    value = value.strip().strip('"')
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


# ---------------------------------------------------------------------------------------- middleware
class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """ASGI middleware: bearer-token auth, loopback-only without a token, request body limits."""

    def __init__(self, app: Any, settings: ServiceSettings | None = None):
        from ncap.service.config import load_settings

        self.app = app
        self.settings = settings or load_settings()
        token = self.settings.token
        self._token = token.encode() if token else None
        self._store: Any = None  # the job store, opened on the first API key presented

    @staticmethod
    async def _send_json(send: Any, status: int, body: dict, headers: list | None = None) -> None:
        data = json.dumps(body).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    def _credential(scope: dict) -> bytes | None:
        """The bearer credential of a request (b"" for another scheme), or None without an Authorization header."""
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                scheme, _, cred = value.partition(b" ")
                return cred.strip() if scheme.lower() == b"bearer" else b""
        return None

    async def _principal(self, cred: bytes) -> Any:
        """The user a credential names: the service token is the admin; an API key (service.users) is looked
        up in the job store on every request, so a revoked key fails at once. None when it names nobody."""
        from ncap.service.users import KEY_PREFIX, TOKEN_ADMIN, principal_for_key

        if self._token is not None and hmac.compare_digest(cred, self._token):
            return TOKEN_ADMIN
        if not cred.startswith(KEY_PREFIX.encode()):
            return None
        import anyio

        if self._store is None:
            from ncap.service.store import JobStore

            self._store = JobStore(self.settings.resolved_db_url)
        return await anyio.to_thread.run_sync(principal_for_key, self._store, cred.decode("latin-1"))

    def _tokenless_refusal(self, scope: dict) -> str | None:
        """Why a request is refused when no token is configured (loopback clients only), or None. A request
        that came through a proxy on this host looks local, so any forwarding header is refused unless the
        operator named the proxy (``trusted_proxies``); then every address it forwards must be local too."""
        client = scope.get("client")
        host = client[0] if client else None
        if not is_loopback(host):
            return (f"client {host} refused: the server has no token configured (NCAP_TOKEN) and then serves "
                    "loopback clients only")
        forwarded = forwarded_addresses(scope.get("headers") or [])
        if forwarded is None:
            return None
        trusted = set(self.settings.trusted_proxies)
        if not trusted:
            return ("request refused: it carries a forwarding header (Forwarded, X-Forwarded-For or X-Real-IP), so "
                    "it came through a proxy and its real client is unknown; without a token this server serves "
                    "only direct loopback clients. Set NCAP_TOKEN, or name the proxy in trusted_proxies")
        far = [a for a in forwarded if not (is_loopback(a) or a in trusted)]
        if far:
            return (f"client {far[0]} refused (forwarded by a trusted proxy): the server has no token configured "
                    "(NCAP_TOKEN) and then serves loopback clients only")
        return None

    def _limit(self, path: str) -> int:
        if path in UPLOAD_PATHS:
            return self.settings.max_upload_bytes
        return self.settings.max_request_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from ncap.service.web import serve_asset

        if (scope.get("path") or "/") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if await serve_asset(scope, send):  # the web page: no token needed, its data calls need one
            return
        path = scope.get("path") or "/"  # as asked (the docs page is served at "/" once authorised)
        scope = await self._authorise(scope, send)
        if scope is None:  # refused, and the refusal is sent
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._within_body_limit(scope, receive, send, path)

    async def _authorise(self, scope: dict, send: Any) -> dict | None:
        """The scope with its principal set (``scope["state"]["ncap_principal"]``), or None once a 401 / 403 (or
        a websocket close) is sent."""
        from ncap.service.users import TOKEN_ADMIN
        from ncap.service.web import DOCS_PAGE

        path = scope.get("path") or "/"
        public = self.settings.public_docs and (path in DOCS_PATHS or path.startswith(DOCS_PREFIXES))
        cred = self._credential(scope)
        principal = None if cred is None else await self._principal(cred)
        # a credential that names nobody is refused even where none is needed: it is a mistake to report
        needs_auth = not public and (self._token is not None or cred is not None)
        if needs_auth and principal is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return None
            await self._send_json(
                send, 401, {"error": "missing, invalid or revoked bearer token: send 'Authorization: Bearer "
                                     "<token>' (the server's NCAP_TOKEN, or an API key from `ncap keys add`)"},
                [(b"www-authenticate", b'Bearer realm="ncap"')])
            return None
        if self._token is None and principal is None and not self.settings.allow_remote_without_token:
            refusal = self._tokenless_refusal(scope)
            if refusal:
                await self._send_json(send, 403, {"error": refusal})
                return None
        scope.setdefault("state", {})["ncap_principal"] = principal or TOKEN_ADMIN
        if path == DOCS_PAGE:  # authorised: BentoML serves its Swagger page at "/", which is ours
            scope = {**scope, "path": "/", "raw_path": b"/"}
        return scope

    async def _declared_too_large(self, scope: dict, send: Any, path: str, limit: int) -> bool:
        """Refuse (400 / 413, sent) a request whose Content-Length is malformed or over ``limit``."""
        for name, value in scope.get("headers") or []:
            if name != b"content-length":
                continue
            try:
                declared = int(value)
            except ValueError:
                await self._send_json(send, 400, {"error": "invalid Content-Length header"})
                return True
            if declared > limit:
                await self._send_json(send, 413, {
                    "error": f"request body of {declared} bytes exceeds the limit of {limit} bytes for {path}"})
                return True
        return False

    async def _within_body_limit(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        """Run the app on an HTTP request whose body may not exceed the path's limit: a declared size over it
        is refused up front, a streamed one as soon as it passes the limit (a 413 either way)."""
        limit = self._limit(path)
        if await self._declared_too_large(scope, send, path, limit):
            return
        received = 0
        too_large = False
        started = False
        too_large_error = {"error": f"request body exceeds the limit of {limit} bytes for {path}"}

        async def limited_receive() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if too_large:  # whatever the app answers to the aborted body, the client gets a 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._send_json(send, 413, too_large_error)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        shaped = _spec_with_errors(guarded_send) if path == "/docs.json" else _error_shape(guarded_send)
        try:
            await self.app(scope, limited_receive, shaped)
        except _BodyTooLarge:
            if not started:
                started = True
                await self._send_json(send, 413, too_large_error)


def _rewritten(send: Any, hold: Any, rewrite: Any) -> Any:
    """An ASGI ``send`` that buffers the body of a response whose start message ``hold(start)`` accepts and
    sends ``rewrite(body)`` instead, with its Content-Length fixed; other responses pass unchanged."""
    held: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and hold(message):
            held = message
            return
        if held is not None and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = rewrite(b"".join(chunks))
            headers = [(k, v) for k, v in held.get("headers") or [] if k != b"content-length"]
            await send({**held, "headers": headers + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


def _error_shape(send: Any) -> Any:
    """Give every 4xx JSON body the shape ``{"error": "<what is wrong>", ...}``: BentoML answers its own 4xx
    with a one-element list (``[{"error": ...}]``, a tuple in its code), and a failed model validation with
    ``{"error": "1 validation error for Input", "detail": [...]}``, whose first line says nothing; that
    line becomes ``<field>: <message>; ...`` from the details."""

    def json_4xx(start: dict) -> bool:
        ctype = dict(start.get("headers") or []).get(b"content-type", b"")
        return 400 <= start["status"] < 500 and ctype.startswith(b"application/json")

    return _rewritten(send, json_4xx, _reshape)


ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error"], "additionalProperties": True,
    "description": "Every 4xx: what is wrong, in one line; some add the job's state or the validation details.",
    "properties": {"error": {"type": "string"}, "detail": {}, "state": {"type": "string"},
                   "error_detail": {}}}


def declare_errors(spec: dict) -> dict:
    """The OpenAPI spec with the 4xx that every route really answers: one ``4XX`` response of schema
    :data:`ERROR_SCHEMA` per operation, in place of BentoML's 400/404 entries (whose ``detail`` is a string,
    while a validation error's is a list, and which leave out 401, 409, 413, 415 and 429)."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error = {"description": "The request is refused (401, 403, 404, 409, 413, 415, 429, or 400 for a bad value)",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for item in (spec.get("paths") or {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and isinstance(operation.get("responses"), dict):
                responses = operation["responses"]
                for code in [c for c in responses if str(c).startswith("4")]:
                    del responses[code]
                responses["4XX"] = error
    return spec


def _spec_with_errors(send: Any) -> Any:
    """An ASGI ``send`` that rewrites the OpenAPI document (``/docs.json``) with :func:`declare_errors`."""
    return _rewritten(send, lambda start: start["status"] == 200,
                      lambda body: json.dumps(declare_errors(json.loads(body))).encode())


def _reshape(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and "error" in data[0]:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("detail"), list) and data["detail"]:
        problems = [f"{'.'.join(str(p) for p in d.get('loc', ()) if p != 'body') or 'body'}: "
                    f"{str(d.get('msg', '')).removeprefix('Value error, ')}" for d in data["detail"][:5]
                    if isinstance(d, dict)]
        data["error"] = "; ".join(problems) + (f" (and {len(data['detail']) - 5} more)" if len(data["detail"]) > 5
                                               else "")
    return json.dumps(data).encode()


# ------------------------------------------------------------------------------------- request bodies
async def read_json_body(request: Any, limit: int) -> bytes:
    """The body of a JSON route, at most ``limit`` bytes; anything but ``application/json`` is a 415."""
    media = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", "text/json", ""):
        raise _bento_error(415, f"send a JSON body (Content-Type: application/json), not {media!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _bento_error(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _bento_error(status: int, message: str) -> Exception:
    from http import HTTPStatus

    from bentoml.exceptions import BentoMLException

    return BentoMLException(message, error_code=HTTPStatus(status))


class SubmitForm:
    """The parts of a ``/jobs/submit`` multipart body: ``config`` (its bytes, or None) and the ``dataset``
    file written to ``upload`` (or None)."""

    FIELDS = ("config", "dataset")

    def __init__(self) -> None:
        self.config: bytes | None = None
        self.upload: Path | None = None
        self.seen: list[str] = []


async def read_submit_form(request: Any, staging: Path, *, max_config_bytes: int) -> SubmitForm:
    """Parse a ``multipart/form-data`` body as a stream. The ``dataset`` file part goes to
    ``staging/upload/<safe file name>`` as it arrives; ``config`` is kept (at most ``max_config_bytes``).
    Raises a 400 for a missing boundary, a malformed body, a field other than ``config`` / ``dataset``, a
    field given twice, a ``dataset`` that is not a file, or a body that ends before its closing boundary."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import (
        MultipartParseError,
        MultipartParser,
        MultipartState,
        parse_options_header,
    )

    _media, params = parse_options_header(request.headers.get("content-type") or "")
    boundary = params.get(b"boundary")
    if not boundary:
        raise _bento_error(400, "multipart/form-data body without a boundary in its Content-Type header")
    if len(boundary) > MAX_BOUNDARY:
        raise _bento_error(400, f"the multipart boundary has {len(boundary)} characters; RFC 2046 allows at most "
                                f"{MAX_BOUNDARY}")
    form, part = SubmitForm(), _Part(staging, max_config_bytes)
    try:
        parser = MultipartParser(boundary, part.callbacks(form))
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, FormParserError) as exc:
        raise _bento_error(400, f"malformed multipart body: {exc}") from exc
    finally:
        part.close()
    if parser.state != MultipartState.END:
        raise _bento_error(400, "the multipart body ends before its closing boundary (--boundary--); it was cut off")
    return form


class _Part:
    """State of the part being parsed (python-multipart calls these back synchronously from write())."""

    def __init__(self, staging: Path, max_config_bytes: int):
        self.staging = staging
        self.max_config_bytes = max_config_bytes
        self.headers: dict[bytes, bytes] = {}
        self.field = self.value = b""
        self.name: str | None = None
        self.file: Any = None
        self.buffer = bytearray()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def callbacks(self, form: SubmitForm) -> dict:
        def begin() -> None:
            self.headers, self.field, self.value, self.name = {}, b"", b"", None
            self.buffer = bytearray()

        def header_field(data: bytes, start: int, end: int) -> None:
            self.field += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self.value += data[start:end]

        def header_end() -> None:
            self.headers[self.field.strip().lower()] = self.value.strip()
            self.field = self.value = b""

        def headers_finished() -> None:
            self._open(form)

        def data(data: bytes, start: int, end: int) -> None:
            if self.file is not None:
                self.file.write(data[start:end])
                return
            self.buffer += data[start:end]
            if len(self.buffer) > self.max_config_bytes:
                raise _bento_error(413, f"the 'config' field exceeds {self.max_config_bytes} bytes")

        def end() -> None:
            if self.name == "config":
                form.config = bytes(self.buffer)
            self.close()

        return {"on_part_begin": begin, "on_header_field": header_field, "on_header_value": header_value,
                "on_header_end": header_end, "on_headers_finished": headers_finished, "on_part_data": data,
                "on_part_end": end}

    def _open(self, form: SubmitForm) -> None:
        from python_multipart.multipart import parse_options_header

        kind, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            raise _bento_error(400, "a multipart part without 'Content-Disposition: form-data; name=...'")
        if name not in SubmitForm.FIELDS:
            raise _bento_error(400, f"unknown multipart field {name!r}; /jobs/submit takes 'config' (JSON) and "
                                    "'dataset' (the file)")
        if name in form.seen:
            raise _bento_error(400, f"the multipart field {name!r} is given twice")
        form.seen.append(name)
        self.name = name
        if name == "dataset":
            filename = params.get(b"filename")
            if filename is None:
                raise _bento_error(400, "the 'dataset' field must be a file (a part with a filename): upload "
                                        "the .npz or .zip, e.g. curl -F dataset=@data.zip")
            target = self.staging / "upload" / safe_filename(filename.decode("utf-8", "replace"))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(target, "wb")  # noqa: SIM115 - closed by end() / close()
            form.upload = target


# ------------------------------------------------------------------------------------------- uploads
def dataset_kind(filename: str | None) -> str:
    """'npz' or 'zip' from an uploaded file's name; anything else is a 415."""
    name = (filename or "").lower()
    for suffix in DATASET_SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    shown = Path(filename or "").suffix or "no suffix"
    raise Rejected(415, f"unsupported dataset file {filename!r} ({shown}): upload a .npz (arrays x, y) or a "
                        ".zip of an ImageFolder (one folder per class)")


def check_upload_file(path: Path, filename: str, settings: ServiceSettings) -> str:
    """Type, magic bytes and size of an uploaded dataset file; returns its kind ('npz' or 'zip')."""
    kind = dataset_kind(filename)
    size = path.stat().st_size
    if size == 0:
        raise Rejected(400, f"dataset file {filename!r} is empty")
    if size > settings.max_upload_bytes:
        raise Rejected(413, f"dataset file {filename!r} has {size} bytes, more than the limit of "
                            f"{settings.max_upload_bytes} bytes (max_upload_mb={settings.max_upload_mb:g})")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head not in ZIP_MAGIC:
        raise Rejected(400, f"dataset file {filename!r} is not a {kind} file (a .{kind} is a zip archive; "
                            f"it starts with {head!r})")
    return kind


BLOCK_BYTES = 4096  # the allocation unit of common file systems (ext4, xfs)
INODE_CHARGE = 512  # what a file or folder costs beyond its blocks: inode, directory entry


def disk_usage(path: Path) -> int:
    """What ``path`` costs the disk: allocated blocks of every file and folder under it (``st_blocks``, so a
    1-byte file counts 4 KiB) plus :data:`INODE_CHARGE` per entry. Sizes in bytes undercount many small
    files: 100 000 one-pixel PNGs are 7 MB of bytes and 410 MB of disk."""
    if not path.exists():
        return 0
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512 + INODE_CHARGE
            except OSError:
                pass
    return total


def charge_for(n_bytes: int) -> int:
    """:func:`disk_usage` of one file of ``n_bytes`` bytes, before it is written."""
    return -(-int(n_bytes) // BLOCK_BYTES) * BLOCK_BYTES + INODE_CHARGE


def check_quota(used: int, incoming: int, limit: int, what: str) -> None:
    """413 when ``used + incoming`` bytes would exceed ``limit``; ``what`` names the quota and its remedy."""
    if used + incoming > limit:
        raise Rejected(413, f"{what} is full: {used} bytes used + {incoming} incoming > limit {limit}; delete "
                            "finished jobs (/jobs/delete)")


def safe_filename(filename: str) -> str:
    """A file name for the data dir: the basename, with anything but [A-Za-z0-9._-] replaced."""
    base = os.path.basename((filename or "").replace("\\", "/")) or "dataset"
    clean = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base).lstrip(".")
    return clean[:100] or "dataset"
