"""OpenTelemetry export of runs: one trace per run, rebuilt from its event log (``outlast[otel]``).

When an attempt ends, its worker reads the run's log, builds the spans that are finished
(:func:`outlast.observe.spans.build_spans`: this attempt, any earlier attempt whose worker was
lost, settled waits, and the run span once the run ended) and hands those not exported yet to an
OpenTelemetry span processor. Which spans went out is recorded per run in Redis (one SADD per
span, a single round trip) so a span is exported once although several processes may build it.

Trace and span ids are derived from the run id (see :mod:`outlast.observe.spans`), not stored at
start: starting a run costs nothing extra, a process that never configured OpenTelemetry (the
API, a dispatcher) needs no part in it, and a worker taking a run over continues the same trace
without reading anything first. The price: a run cannot join the trace of the request that
started it (it gets a trace of its own; the run id is on every span as ``outlast.run_id``).

Configure with the standard variables: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``; ``OUTLAST_OTEL=console`` prints spans instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from outlast.errors import OutlastError
from outlast.observe.spans import CLIENT, SpanData, build_spans, span_id_of, trace_id_of
from outlast.store import keys
from outlast.store.client import RedisClient
from outlast.store.errors import guard
from outlast.store.redis import RedisStore

log = logging.getLogger("outlast.observe")

try:
    _VERSION = version("outlast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"
_SCOPE = InstrumentationScope("outlast", _VERSION)
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


class OtelExporter:
    """Exports runs' spans through ``processor`` (a :class:`BatchSpanProcessor` in production;
    tests pass a ``SimpleSpanProcessor(InMemorySpanExporter())``). A :class:`RunObserver`."""

    def __init__(
        self,
        redis: RedisClient,
        processor: SpanProcessor,
        *,
        resource: Resource | None = None,
        retention: float = 7 * 24 * 3600,
    ) -> None:
        self.redis = redis
        self.store = RedisStore(redis)
        self.processor = processor
        self.resource = resource or default_resource()
        self.retention = int(retention)

    async def attempt_ended(self, run_id: str, attempt: int) -> None:
        await self.export_run(run_id, over_through=attempt)

    async def run_ended(self, run_id: str) -> None:
        await self.export_run(run_id)

    async def export_run(self, run_id: str, *, over_through: int | None = None) -> int:
        """Export the run's finished spans not exported yet (attempts up to ``over_through`` are
        over; default: all but a live one). Returns how many were exported."""
        try:
            log_events = [event async for event in self.store.read_events(run_id, follow=False)]
            if over_through is None:
                ended = any(event.terminal for event in log_events)
                last = max((event.attempt for event in log_events), default=0)
                over_through = last if ended else last - 1
            spans = build_spans(log_events, over_through=over_through)
            fresh = await self._claim(run_id, spans)
        except OutlastError as exc:  # the store is away: these spans go out with the next attempt
            log.warning("spans of run %s not exported: %s", run_id, exc)
            return 0
        trace_id = trace_id_of(run_id)
        for span in fresh:
            self.processor.on_end(self._readable(run_id, trace_id, span))
        return len(fresh)

    async def _claim(self, run_id: str, spans: Sequence[SpanData]) -> list[SpanData]:
        """The spans nobody exported yet, now marked as ours (SADD answers 1 to one caller only)."""
        if not spans:
            return []
        key = keys.exported_spans(run_id)
        pipe = self.redis.pipeline(transaction=False)
        for span in spans:
            pipe.sadd(key, span.key)
        pipe.expire(key, self.retention)
        replies: list[Any] = await guard(pipe.execute())
        return [span for span, added in zip(spans, replies, strict=False) if added == 1]

    def _readable(self, run_id: str, trace_id: int, span: SpanData) -> ReadableSpan:
        context = trace.SpanContext(trace_id, span_id_of(run_id, span.key), False, _SAMPLED)
        parent = None
        if span.parent is not None:
            parent = trace.SpanContext(trace_id, span_id_of(run_id, span.parent), True, _SAMPLED)
        status = trace.Status(trace.StatusCode.ERROR, span.error) if span.error else trace.Status()
        events = [Event(name, attrs, _ns(ts)) for name, ts, attrs in span.events]
        attributes: dict[str, Any] = {"outlast.run_id": run_id, **span.attributes}
        end = span.end if span.end is not None else span.start
        return ReadableSpan(
            name=span.name, context=context, parent=parent, resource=self.resource,
            attributes=attributes, events=events, instrumentation_scope=_SCOPE, status=status,
            kind=trace.SpanKind.CLIENT if span.kind == CLIENT else trace.SpanKind.INTERNAL,
            start_time=_ns(span.start), end_time=_ns(max(end, span.start)),
        )  # fmt: skip

    async def aclose(self) -> None:
        # The batch processor's export is a blocking HTTP call: off the event loop.
        await asyncio.to_thread(self.processor.shutdown)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def default_resource() -> Resource:
    """``service.name`` from ``OTEL_SERVICE_NAME`` (default ``outlast``) and ``OTEL_RESOURCE_ATTRIBUTES``,
    plus this process's id (spans of one run may come from several processes)."""
    attributes: dict[str, Any] = {"process.pid": os.getpid()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "outlast"
    return Resource.create(attributes)


def exporter_from_env(redis: RedisClient, *, retention: float = 7 * 24 * 3600) -> OtelExporter:
    """OTLP over HTTP (protobuf), configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables;
    ``OUTLAST_OTEL=console`` prints the spans to stdout instead."""
    exporter: SpanExporter
    if os.environ.get("OUTLAST_OTEL", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    return OtelExporter(redis, BatchSpanProcessor(exporter), retention=retention)


__all__ = ["OtelExporter", "default_resource", "exporter_from_env"]
