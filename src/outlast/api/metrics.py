"""Prometheus metrics of one API app, in its own registry (several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """Runs started by workflow, active streams, events served, feeds, request latency.

    Completions and failures are counted where they happen (the workers): an API replica only
    sees the runs someone happens to watch.
    """

    def __init__(self, feeds: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "outlast_api_runs_started", "Runs started through this API process.", ["workflow"], registry=r
        )
        self.streams_active = Gauge(
            "outlast_api_streams_active", "Event streams being served now.", ["format"], registry=r
        )
        self.events_served = Counter(
            "outlast_api_events_served", "Events sent to stream clients.", ["format"], registry=r
        )
        self.feeds_active = Gauge(
            "outlast_api_feeds_active", "Runs tailed now (one blocking XREAD each).", registry=r
        )
        self.feeds_active.set_function(lambda: float(feeds()))
        self.request_latency = Histogram(
            "outlast_api_request_duration_seconds",
            "Time from request to response start (for streams: to the first byte).",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Observes the time to ``http.response.start``, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                labels = (scope["method"], template, str(message["status"]))
                self.metrics.request_latency.labels(*labels).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
