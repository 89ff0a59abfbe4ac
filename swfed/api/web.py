"""The bundled web client: ``GET /`` and ``GET /web/<file>`` from ``swfed/web/``.

Plain files, no build step, nothing fetched from anywhere else. Every answer
carries a strict Content-Security-Policy (scripts, styles, images and
connections from this server only; no inline script, no eval, no framing),
``nosniff`` and ``no-referrer``. Files are revalidated on each load
(``Cache-Control: no-cache`` with a strong ``ETag``, so an unchanged file costs
a 304), which keeps an upgraded server from serving a stale client.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path

from quart import Blueprint, Response, request

from swfed.core.errors import NotFound

bp = Blueprint("web", __name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'none'",
    "object-src 'none'",
    "media-src 'none'",
    "frame-src 'none'",
    "worker-src 'none'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain; charset=utf-8"}


def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    return response


@cache
def _files() -> dict[str, tuple[bytes, str, str]]:
    """Every file of the client, read once: name -> (content, content type, ETag).

    Only these names are ever served, so no request path reaches the file
    system and a flood of unknown names costs nothing to remember.
    """
    out: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(WEB_ROOT.rglob("*")):
        rel = path.relative_to(WEB_ROOT).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        data = path.read_bytes()
        ctype = (TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
                 or "application/octet-stream")
        out[rel] = (data, ctype, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    return out


def _serve(name: str) -> Response:
    found = _files().get(name)
    if found is None:
        raise NotFound(f"no file {name} in the web client", code="SW_NOT_FOUND")
    data, ctype, etag = found
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        response = Response(b"", status=304)
    else:
        response = Response(data, status=200, content_type=ctype)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return security_headers(response)


@bp.get("/")
async def index() -> Response:
    return _serve("index.html")


@bp.get("/web/<path:name>")
async def static_file(name: str) -> Response:
    return _serve(name)


@bp.get("/favicon.ico")
async def favicon() -> Response:
    return _serve("icon.svg")
