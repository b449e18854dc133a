"""The API app factory. Stateless: every answer comes from Redis, so replicas are interchangeable.

The API never runs workflow code: it validates inputs, starts and cancels runs through the
:class:`~outlast.control.Dispatcher`, and reads run state and event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.responses import Response

from outlast.api import assets, console, fleet, runs, streaming, workflows
from outlast.api.adapters import ag_ui_routes, ui_routes
from outlast.api.auth import Authenticator, admins_from_env, install_log_redaction, keys_from_env
from outlast.api.cors import allow_cross_origin, check_origins, origins_from_env
from outlast.api.errors import BodyLimitMiddleware, error_response, install_error_handlers
from outlast.api.hub import Hub
from outlast.api.metrics import ApiMetrics, LatencyMiddleware
from outlast.api.schemas import EventEnvelope, Health, StreamError, errors_doc
from outlast.api.state import ApiState, Settings, StateDep
from outlast.control import Dispatcher
from outlast.errors import ConfigError
from outlast.observe.logs import RunContextMiddleware
from outlast.store.client import redis_from_url
from outlast.store.connect import ENV_URL

log = logging.getLogger("outlast.api")

DESCRIPTION = """Start, inspect, cancel and stream durable Outlast runs.

Errors are always `{"error": {"code", "message", "details"}}`. When API keys are configured every
`/v1` call needs `Authorization: Bearer KEY`; `GET /v1/runs/{id}/events` also accepts `?token=KEY`
for browsers' EventSource, which cannot send headers.

Streams: `id:` is the event's seq. Resume with `Last-Event-ID` (EventSource does this on its own
reconnects) or `?after=SEQ` (after a page refresh, keep the cursor yourself). Browsers allow six
HTTP/1.1 connections per origin: serve through HTTP/2 or keep few streams open per page.

The web console is served at `/` (it uses only this API). `POST /v1/deploy/promote` and
`/rollback` need a key whose tenant is listed in `OUTLAST_ADMIN_TENANTS` (open mode: anyone)."""


ENV_MAX_CONNECTIONS = "OUTLAST_API_MAX_CONNECTIONS"
DEFAULT_MAX_CONNECTIONS = 256


def max_connections_from_env() -> int:
    """``$OUTLAST_API_MAX_CONNECTIONS``, else the default cap of the API's Redis pool."""
    raw = os.environ.get(ENV_MAX_CONNECTIONS, "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    if not raw.isdigit() or int(raw) < 2:
        raise ConfigError(f"{ENV_MAX_CONNECTIONS}={raw!r}: need a whole number >= 2")
    return int(raw)


def create_app(
    redis_url: str | None = None,
    *,
    api_keys: dict[str, str] | None = None,
    admin_tenants: frozenset[str] | None = None,
    max_body: int = 1 << 20,
    keepalive: float = 15.0,
    retry_ms: int = 2_000,
    block_ms: int = 5_000,
    send_timeout: float = 30.0,
    retention: float = 7 * 24 * 3600,
    max_connections: int | None = None,
    store_retry: float = 30.0,
    body_timeout: float = 30.0,
    metrics_token: str | None = None,
    cors_origins: Sequence[str] | None = None,
) -> FastAPI:
    """The Outlast HTTP API.

    ``redis_url`` defaults to ``$OUTLAST_REDIS_URL``; ``api_keys`` ({key: tenant}) to
    ``$OUTLAST_API_KEYS`` / ``$OUTLAST_API_KEYS_FILE`` (neither = open mode); ``admin_tenants`` (who
    may promote and roll back) to ``$OUTLAST_ADMIN_TENANTS``. ``keepalive``: seconds
    between keep-alive comments on idle streams (0 = none, and then an SSE client that stopped
    reading is only noticed by TCP); ``retry_ms``: the SSE reconnect hint; ``block_ms``:
    how long one blocking XREAD waits before re-checking its run; ``send_timeout``: a client that
    accepts no stream bytes for this long is dropped. ``max_connections`` caps the Redis pool
    (default ``$OUTLAST_API_MAX_CONNECTIONS``, else 256): each run being tailed holds one connection
    while its XREAD blocks, other commands borrow one briefly; when all are in use a command waits
    for one (runs tailed beyond the cap take turns, up to ``block_ms`` each). ``store_retry``: how
    long a stream keeps retrying an unreachable store before it ends with an ``error`` event;
    ``body_timeout``: a request body that stops arriving for this long is answered 408;
    ``metrics_token``: the bearer token ``/metrics`` needs (default ``$OUTLAST_METRICS_TOKEN``; see
    :class:`~outlast.api.auth.Authenticator`); ``cors_origins``: origins whose browser pages may
    call the API (default ``$OUTLAST_CORS_ORIGINS``, comma-separated; none: no CORS headers).
    """
    url = redis_url or os.environ.get(ENV_URL)
    if not url:
        raise ConfigError(f"the API needs a Redis URL: pass redis_url or set {ENV_URL}")
    if max_body < 1 or keepalive < 0 or retry_ms < 0 or block_ms < 1 or send_timeout <= 0:
        raise ConfigError("API settings: need max_body >= 1, keepalive >= 0, retry_ms >= 0, block_ms >= 1")
    if store_retry < 0 or body_timeout <= 0:
        raise ConfigError("API settings: need store_retry >= 0 and body_timeout > 0")
    max_connections = max_connections or max_connections_from_env()
    origins = check_origins(cors_origins) if cors_origins is not None else origins_from_env()
    settings = Settings(
        redis_url=url, max_body=max_body, keepalive=keepalive, retry_ms=retry_ms, block_ms=block_ms,
        send_timeout=send_timeout, retention=retention, max_connections=max_connections,
        store_retry=store_retry,
    )  # fmt: skip
    auth = Authenticator(
        api_keys if api_keys is not None else keys_from_env(),
        metrics_token,
        admins=admin_tenants if admin_tenants is not None else admins_from_env(),
    )
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
            # Every blocked XREAD returns within block_ms, so a waiter gets a connection within
            # a few turns even when more runs are tailed than there are connections.
            wait_for_connection=max(30.0, 3 * block_ms / 1000),
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

    # Swagger UI and ReDoc are served from fastapi-offline's copy of their files: /docs works
    # without a CDN. No redirect for a trailing slash: Starlette's would answer 307 with an
    # absolute Location built from the client's Host header, before any auth (a 404 instead).
    app = FastAPIOffline(
        title="Outlast API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        static_url="/docs/assets",
        swagger_ui_parameters={"validatorUrl": None},  # (the validator badge calls a public server)
    )
    install_error_handlers(app)
    install_log_redaction()
    app.include_router(workflows.router, tags=["workflows"])
    app.include_router(runs.router, tags=["runs"])
    app.include_router(streaming.router, tags=["runs"])
    app.include_router(ui_routes.router, tags=["ui protocols"])
    app.include_router(ag_ui_routes.router, tags=["ui protocols"])
    app.include_router(fleet.router, tags=["fleet"])
    app.include_router(assets.router, tags=["browser client"])
    app.include_router(console.router, tags=["console"])

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

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=errors_doc(401))
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format. Needs `Authorization: Bearer` with `$OUTLAST_METRICS_TOKEN` when
        one is set, else any API key when keys are configured (open otherwise)."""
        auth.check_metrics(request.headers.get("authorization"))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {})
            for model in (EventEnvelope, StreamError):  # referenced by the stream responses
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                found.pop("$defs", None)  # (ErrorDetail is there already, from the error bodies)
                components["schemas"][model.__name__] = found
            components["securitySchemes"] = {
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
    app.add_middleware(BodyLimitMiddleware, max_body=max_body, timeout=body_timeout)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(RunContextMiddleware)  # the run id on the log lines of a request about a run
    allow_cross_origin(app, origins)
    return app
