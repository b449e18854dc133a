"""The web console: ``GET /`` (its page) and ``GET /console/{file}`` (its CSS and ES modules).

The files are public (code, never data); every datum the page shows comes from the ``/v1`` API
with the key the user types in (kept in the tab's sessionStorage), so the console has exactly the
caller's rights. Files are read once per process from the installed package.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from outlast.api.errors import ApiError

router = APIRouter()

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"^[a-z0-9-]+\.(html|js|css|svg)$")
#: The page may load only its own files, the API's /client.js and fetch/stream the API itself.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@functools.cache
def _load(name: str) -> tuple[bytes, str] | None:
    try:
        body = resources.files("outlast.console").joinpath("static", name).read_bytes()
    except (OSError, FileNotFoundError):
        return None
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _serve(name: str, request: Request) -> Response:
    found = _load(name) if _NAME.match(name) else None
    if found is None:
        raise ApiError(404, "not_found", f"the console has no file {name!r}")
    body, etag = found
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",  # revalidated: an upgraded API serves its own console
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _CSP,
        "Referrer-Policy": "no-referrer",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_TYPES["." + name.rsplit(".", 1)[1]], headers=headers)


@router.get("/", response_class=Response, include_in_schema=False)
async def console_page(request: Request) -> Response:
    """The console's single page (runs, a run, workers & deploys: routed in the URL's fragment)."""
    return _serve("index.html", request)


@router.get("/console/{name}", response_class=Response, include_in_schema=False)
async def console_file(name: str, request: Request) -> Response:
    return _serve(name, request)
