"""Cross-origin access to the API, for browser apps served from another origin.

Off unless origins are configured (``create_app(cors_origins=…)``, ``outlast api --cors-origin``,
or ``$OUTLAST_CORS_ORIGINS``, comma-separated): a browser page on an allowed origin may then call
``/v1`` with an ``Authorization`` header and read the streams. Credentials (cookies) are never
allowed: the API authenticates by bearer key only, so ``*`` grants no more than the key does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from outlast.errors import ConfigError

ENV_CORS_ORIGINS = "OUTLAST_CORS_ORIGINS"
#: Request headers a cross-origin page may send (the preflight answers with these).
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Accept", "Last-Event-ID")
#: Response headers its scripts may read.
EXPOSED_HEADERS = ("X-Outlast-Run-Id", "x-vercel-ai-ui-message-stream", "Retry-After")


def check_origins(origins: Sequence[str]) -> list[str]:
    """``origins`` if each is ``*`` or ``scheme://host[:port]``; ConfigError naming the first that is not."""
    checked = []
    for raw in origins:
        origin = raw.strip().rstrip("/")
        if origin == "*":
            checked.append(origin)
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(
                f"CORS origin {raw!r}: give scheme://host[:port] (like https://app.example.com) or *"
            )
        checked.append(origin)
    return checked


def origins_from_env() -> list[str]:
    """``$OUTLAST_CORS_ORIGINS`` as a list (empty: CORS off)."""
    raw = os.environ.get(ENV_CORS_ORIGINS, "")
    return check_origins([part for part in raw.split(",") if part.strip()])


def allow_cross_origin(app: FastAPI, origins: Sequence[str]) -> None:
    """Answer preflights and add CORS headers for ``origins`` (nothing when empty). Added last, so
    it is the outermost middleware: a preflight never reaches authentication."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=600,
    )
