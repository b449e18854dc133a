"""The API app factory. Stateless: every answer comes from Redis, so replicas are interchangeable.

The API never runs workflow code: it validates inputs, starts and cancels runs through the
:class:`~outlast.control.Dispatcher`, and reads run state and event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.responses import Response

from outlast.api import assets, runs, streaming, workflows
from outlast.api.adapters import ag_ui_routes, ui_routes
from outlast.api.auth import Authenticator, install_log_redaction, keys_from_env
from outlast.api.errors import BodyLimitMiddleware, error_response, install_error_handlers
from outlast.api.hub import Hub
from outlast.api.metrics import ApiMetrics, LatencyMiddleware
from outlast.api.schemas import Health, errors_doc
from outlast.api.state import ApiState, Settings, StateDep
from outlast.control import Dispatcher
from outlast.errors import ConfigError
from outlast.store.client import redis_from_url
from outlast.store.connect import ENV_URL

log = logging.getLogger("outlast.api")

DESCRIPTION = """Start, inspect, cancel and stream durable Outlast runs.

Errors are always `{"error": {"code", "message", "details"}}`. When API keys are configured every
`/v1` call needs `Authorization: Bearer KEY`; `GET /v1/runs/{id}/events` also accepts `?token=KEY`
for browsers' EventSource, which cannot send headers.

Streams: `id:` is the event's seq. Resume with `Last-Event-ID` (EventSource does this on its own
reconnects) or `?after=SEQ` (after a page refresh, keep the cursor yourself). Browsers allow six
HTTP/1.1 connections per origin: serve through HTTP/2 or keep few streams open per page."""


def create_app(
    redis_url: str | None = None,
    *,
    api_keys: dict[str, str] | None = None,
    max_body: int = 1 << 20,
    keepalive: float = 15.0,
    retry_ms: int = 2_000,
    block_ms: int = 5_000,
    send_timeout: float = 30.0,
    retention: float = 7 * 24 * 3600,
    max_connections: int | None = None,
) -> FastAPI:
    """The Outlast HTTP API.

    ``redis_url`` defaults to ``$OUTLAST_REDIS_URL``; ``api_keys`` ({key: tenant}) to
    ``$OUTLAST_API_KEYS`` / ``$OUTLAST_API_KEYS_FILE`` (neither = open mode). ``keepalive``: seconds
    between keep-alive comments on idle streams (0 = none, and then an SSE client that stopped
    reading is only noticed by TCP); ``retry_ms``: the SSE reconnect hint; ``block_ms``:
    how long one blocking XREAD waits before re-checking its run; ``send_timeout``: a client that
    accepts no stream bytes for this long is dropped. ``max_connections`` caps the Redis pool
    (default unbounded: each watched run holds one connection while its XREAD blocks).
    """
    url = redis_url or os.environ.get(ENV_URL)
    if not url:
        raise ConfigError(f"the API needs a Redis URL: pass redis_url or set {ENV_URL}")
    if max_body < 1 or keepalive < 0 or retry_ms < 0 or block_ms < 1 or send_timeout <= 0:
        raise ConfigError("API settings: need max_body >= 1, keepalive >= 0, retry_ms >= 0, block_ms >= 1")
    settings = Settings(
        redis_url=url, max_body=max_body, keepalive=keepalive, retry_ms=retry_ms, block_ms=block_ms,
        send_timeout=send_timeout, retention=retention, max_connections=max_connections,
    )  # fmt: skip
    auth = Authenticator(api_keys if api_keys is not None else keys_from_env())
    holder: dict[str, Hub] = {}
    metrics = ApiMetrics(lambda: holder["hub"].feeds if "hub" in holder else 0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking XREADs hold their connection for up to block_ms: the socket timeout must exceed it.
        client = redis_from_url(
            url,
            socket_connect_timeout=5,
            socket_timeout=block_ms / 1000 + 10,
            max_connections=max_connections,
        )
        hub = Hub(client, block_ms=block_ms)
        holder["hub"] = hub
        dispatcher = Dispatcher(client, retention=retention, cache_active_version=True)
        app.state.outlast = ApiState(settings, auth, metrics, client, dispatcher, hub)
        log.info("outlast api: %s mode", "open" if auth.open else "API-key")
        try:
            yield
        finally:
            await hub.close()
            await dispatcher.aclose()
            await client.aclose()

    app = FastAPI(
        title="Outlast API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_log_redaction()
    app.include_router(workflows.router, tags=["workflows"])
    app.include_router(runs.router, tags=["runs"])
    app.include_router(streaming.router, tags=["runs"])
    app.include_router(ui_routes.router, tags=["ui protocols"])
    app.include_router(ag_ui_routes.router, tags=["ui protocols"])
    app.include_router(assets.router, tags=["browser client"])

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["operations"],
        responses=errors_doc(503),
    )
    async def healthz(state: StateDep) -> Any:
        """200 when Redis answers a PING within a second, else 503."""
        try:
            async with asyncio.timeout(1.0):
                await state.redis.ping()
        except Exception as exc:  # whatever the failure, the answer is "not healthy"
            log.warning("health check: Redis unreachable: %s", exc)
            return error_response(503, "store_unavailable", "Redis is unreachable")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "KEY from OUTLAST_API_KEYS"}
            }
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Outermost first: latency sees everything, then the body limit guards the routes.
    app.add_middleware(BodyLimitMiddleware, max_body=max_body)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app
