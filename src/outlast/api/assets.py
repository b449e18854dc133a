"""The browser client, served by the API: ``GET /client.js`` (an ES module) and ``/client.d.ts``.

A page served from anywhere can ``import { createClient } from "https://api.example/client.js"``.
The files are read from the installed package (``outlast/clients/js``), so the module always
matches the API that serves it. They are public (no API key): they hold code, never data.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from outlast.api.errors import ApiError

router = APIRouter()

#: URL path → (file in ``outlast/clients/js``, media type).
FILES = {
    "/client.js": ("outlast.js", "text/javascript; charset=utf-8"),
    "/client.d.ts": ("outlast.d.ts", "text/plain; charset=utf-8"),
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str
    media_type: str


@functools.cache
def load_asset(path: str) -> Asset:
    """The file behind ``path``, read once per process (it cannot change under a running API)."""
    name, media_type = FILES[path]
    try:
        body = resources.files("outlast.clients").joinpath("js", name).read_bytes()
    except OSError as exc:
        raise ApiError(
            503, "client_missing", f"this installation of outlast lacks clients/js/{name}: reinstall it"
        ) from exc
    return Asset(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', media_type)


def _serve(path: str, request: Request) -> Response:
    asset = load_asset(path)
    headers = {
        "ETag": asset.etag,
        # Revalidated on every load (a 304 while unchanged), so an upgraded API serves its own client.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        # A module script from another origin needs CORS; the file is public code.
        "Access-Control-Allow-Origin": "*",
    }
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/client.js", response_class=Response, responses={200: {"content": {"text/javascript": {}}}})
async def client_js(request: Request) -> Response:
    """The browser client as an ES module: ``createClient``, ``streamRun`` and the run-state reducer."""
    return _serve("/client.js", request)


@router.get("/client.d.ts", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def client_types(request: Request) -> Response:
    """TypeScript declarations of ``/client.js``."""
    return _serve("/client.d.ts", request)
