"""Acceptance: the OpenTelemetry spans of a run taken over once form one trace tree.

Real worker processes export over OTLP/HTTP (the SDK's exporter, configured by the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) to a collector this test runs on a loopback port; the
first worker is SIGKILLed inside a step and a second takes the run over.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.observe.spans import trace_id_of

from .app import traced
from .conftest import SpawnWorker
from .test_faults import wait_event

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


@dataclass(frozen=True)
class Collected:
    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start: int
    end: int
    attributes: dict[str, Any]
    pid: int  # the exporting process (resource attribute process.pid)
    error: bool


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class Collector:
    """An OTLP/HTTP trace receiver (protobuf) on 127.0.0.1 keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Collected] = []
        self.changed = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                collector.add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(Collected(
                        int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"),
                        int.from_bytes(span.parent_span_id, "big") or None, span.name,
                        span.start_time_unix_nano, span.end_time_unix_nano,
                        {a.key: _value(a.value) for a in span.attributes}, int(resource["process.pid"]),
                        span.status.code == span.status.STATUS_CODE_ERROR,
                    ))  # fmt: skip
        with self.changed:
            self.spans.extend(found)
            self.changed.notify_all()

    async def until(self, check: Callable[[list[Collected]], bool], timeout: float = 20) -> list[Collected]:
        def wait() -> list[Collected]:
            with self.changed:
                if not self.changed.wait_for(lambda: check(self.spans), timeout):
                    raise AssertionError(f"collector: not seen within {timeout}s: {self.spans}")
                return list(self.spans)

        return await asyncio.to_thread(wait)


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    found = Collector()
    found.thread.start()
    # Read by the worker processes the test spawns (they inherit the environment).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", found.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "outlast-test")
    yield found
    found.server.shutdown()
    found.server.server_close()


def named(spans: list[Collected], name: str) -> list[Collected]:
    return [span for span in spans if span.name == name]


async def test_spans_of_a_run_taken_over_once_form_one_trace_tree(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, collector: Collector
) -> None:
    dispatcher = Dispatcher(redis)
    first = await spawn_worker()
    run_id = (await dispatcher.start(traced, {"tag": "otel"})).run_id
    # Attempt 1 suspends in the sleep; the first worker exports it. Attempt 2 (same worker) enters the gate.
    await wait_event(dispatcher, run_id, ev.STEP_STARTED, attempt=2)
    await collector.until(lambda spans: bool(named(spans, "attempt 1")))
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    await redis.lpush("gate:otel", "go")
    second = await spawn_worker()
    assert await dispatcher.result(run_id, timeout=30) == "open"
    spans = await collector.until(lambda spans: bool(named(spans, "run traced")))

    # One trace, each span once, every parent exported, the run span its only root.
    assert {span.trace_id for span in spans} == {trace_id_of(run_id)}
    by_id = {span.span_id: span for span in spans}
    assert len(by_id) == len(spans), "a span was exported twice"
    (root,) = [span for span in spans if span.parent_id is None]
    assert root.name == "run traced"
    assert root.attributes["outlast.status"] == "completed"
    assert root.attributes["outlast.attempts"] == 3
    for span in spans:
        assert span.attributes["outlast.run_id"] == run_id
        assert span.start <= span.end
        if span.parent_id is not None:
            parent = by_id[span.parent_id]
            assert parent.start <= span.start, (span.name, parent.name)
            if span.name != "sleep":  # a wait outlives the attempt that began it, not the run
                assert span.end <= parent.end, (span.name, parent.name)

    # The attempts: suspended on the first worker, lost with it, completed on the second.
    attempts = {
        span.attributes["outlast.attempt"]: span for span in spans if span.name.startswith("attempt ")
    }
    assert sorted(attempts) == [1, 2, 3]
    assert all(span.parent_id == root.span_id for span in attempts.values())
    outcomes = [(a.attributes["outlast.worker"], a.attributes["outlast.attempt.outcome"]) for a in
                (attempts[1], attempts[2], attempts[3])]  # fmt: skip
    assert outcomes == [(first.id, "suspended"), (first.id, "interrupted"), (second.id, "completed")]
    assert attempts[2].error
    assert attempts[1].end <= attempts[2].start <= attempts[2].end <= attempts[3].start

    # Steps hang under the attempt that ran them; the gate twice: killed in attempt 2, done in 3.
    gates = sorted(named(spans, "gate"), key=lambda span: span.start)
    assert [g.parent_id for g in gates] == [attempts[2].span_id, attempts[3].span_id]
    assert [g.error for g in gates] == [True, False]
    works = sorted(named(spans, "work"), key=lambda span: span.start)
    assert [w.parent_id for w in works] == [attempts[1].span_id, attempts[3].span_id]
    (sleep,) = named(spans, "sleep")
    assert sleep.parent_id == root.span_id
    assert sleep.start >= attempts[1].start
    assert sleep.end <= attempts[2].start

    # Both worker processes exported: the first its suspended attempt, the second the rest
    # (the first's lost attempt included: a SIGKILLed process exports nothing).
    exporters = {span.name: span.pid for span in spans}
    assert exporters["attempt 1"] == first.pid
    assert exporters["attempt 2"] == exporters["attempt 3"] == exporters["run traced"] == second.pid
