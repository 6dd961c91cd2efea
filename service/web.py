"""The service's web page: ``/`` and its two assets under ``/ui/``, written by hand in ``service/web/`` (no
CDN, no build step), served by :func:`serve_asset` from ``GuardMiddleware``, in front of BentoML. BentoML's own Swagger page moves to
``/docs``.

The page itself needs no token; every data call it makes does (``Authorization: Bearer``, kept in the
browser's session storage). Its responses forbid inline scripts and styles (``Content-Security-Policy``),
MIME sniffing and referrers; the page builds its DOM with ``textContent``, so what users supplied (labels,
class names, error text) is shown as text.
"""
from __future__ import annotations

from importlib import resources
from typing import Any

ASSETS = {"/": ("index.html", b"text/html; charset=utf-8"),
          "/ui/app.js": ("app.js", b"text/javascript; charset=utf-8"),
          "/ui/app.css": ("app.css", b"text/css; charset=utf-8")}
DOCS_PAGE = "/docs"  # BentoML's Swagger UI, which BentoML serves at "/"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


def asset(name: str) -> bytes:
    return resources.files("ncap.service").joinpath("web", name).read_bytes()


async def serve_asset(scope: dict, send: Any) -> bool:
    """Answer a GET/HEAD of the page or one of its assets (True), or leave the request alone (False).
    ``GuardMiddleware`` calls it first: the page needs no token."""
    path = scope.get("path") or "/"
    if scope["type"] != "http" or path not in ASSETS or scope.get("method") not in ("GET", "HEAD"):
        return False
    name, ctype = ASSETS[path]
    try:
        body = asset(name)
    except FileNotFoundError:  # an install without the page's files
        body, ctype = b"the web page is not installed", b"text/plain"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-cache"),
               *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
    return True
