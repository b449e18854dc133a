"""OpenTelemetry export, in process, with the SDK's InMemorySpanExporter: the tree a worker exports,
GenAI attributes on LLM spans, an interrupted attempt's spans, each span exported once, and nothing
of OpenTelemetry imported unless export is configured. (Across processes with a real SIGKILL:
tests/worker/test_tracing.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import outlast
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.llm import LLM
from outlast.llm.simulator import SimulatorServer
from outlast.observe import otel_enabled
from outlast.observe.otel import OtelExporter
from outlast.observe.spans import span_id_of, trace_id_of
from outlast.store.redis import RedisStore
from outlast.worker.worker import Worker

from ..llm.llm_support import KEY, MODEL, openai_provider


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def exporter(redis: aioredis.Redis, memory: InMemorySpanExporter) -> OtelExporter:
    return OtelExporter(redis, SimpleSpanProcessor(memory))


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=5, api_keys=[KEY]) as server:
        yield server


@pytest.fixture
async def llm(sim: SimulatorServer, redis: aioredis.Redis) -> AsyncIterator[LLM]:
    client = LLM([openai_provider(sim)], redis=redis)
    yield client
    await client.aclose()


def check_tree(spans: list[ReadableSpan], run_id: str) -> dict[str, ReadableSpan]:
    """One trace, one root (the run span), every parent present, children inside their parent's
    time; returns the spans by name."""
    assert spans
    ids = {span.context.span_id: span for span in spans}
    assert len(ids) == len(spans), "a span was exported twice"
    assert {span.context.trace_id for span in spans} == {trace_id_of(run_id)}
    roots = [span for span in spans if span.parent is None]
    assert [root.name for root in roots] == [f"run {roots[0].attributes['outlast.workflow']}"]
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["outlast.run_id"] == run_id
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time
        if span.parent is None:
            continue
        assert span.parent.trace_id == trace_id_of(run_id)
        parent = ids.get(span.parent.span_id)
        assert parent is not None, f"{span.name}: its parent was not exported"
        assert parent.start_time is not None
        assert parent.end_time is not None
        assert parent.start_time <= span.start_time, f"{span.name} starts before {parent.name}"
        if span.attributes.get("outlast.wait") is None:  # a wait may outlive its parent's attempt
            assert span.end_time <= parent.end_time, f"{span.name} ends after {parent.name}"
    return {span.name: span for span in spans}


@outlast.component
async def inner(x: int) -> int:
    return x * 2


_flaky_tries: dict[str, int] = {}


@outlast.component(retry=outlast.Retry(attempts=2, backoff_base=0.01))
async def flaky(tag: str) -> str:
    _flaky_tries[tag] = _flaky_tries.get(tag, 0) + 1
    if _flaky_tries[tag] == 1:
        raise ValueError("first try fails")
    return "ok"


@outlast.component
async def outer(x: int) -> int:
    return await inner(x) + 1


async def test_a_worker_exports_run_attempt_step_and_llm_spans_as_one_tree(
    redis: aioredis.Redis, exporter: OtelExporter, memory: InMemorySpanExporter, llm: LLM
) -> None:
    @outlast.workflow(name="otel_traced")
    async def traced(x: int) -> int:
        await flaky("t1")
        reply = await llm.complete("Say something", max_tokens=5)
        assert reply.tokens_out > 0
        return await outer(x)

    run_id = (await Dispatcher(redis).start(traced, {"x": 3})).run_id
    await Worker([traced], redis, observer=exporter).run_until_idle()
    assert await Dispatcher(redis).result(run_id, timeout=10) == 7
    spans = check_tree(list(memory.get_finished_spans()), run_id)
    assert set(spans) == {"run otel_traced", "attempt 1", "flaky", f"chat {MODEL}", "outer", "inner"}
    run, attempt = spans["run otel_traced"], spans["attempt 1"]
    assert run.attributes is not None
    assert run.attributes["outlast.status"] == "completed"
    assert run.context.span_id == span_id_of(run_id, "run")
    assert attempt.parent is not None
    assert attempt.parent.span_id == run.context.span_id
    assert spans["inner"].parent is not None
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id  # nested as called
    assert spans["outer"].parent is not None
    assert spans["outer"].parent.span_id == attempt.context.span_id
    retried = spans["flaky"]
    assert retried.attributes is not None
    assert retried.attributes["outlast.tries"] == 2
    assert [e.name for e in retried.events] == ["step.retrying"]
    assert retried.events[0].attributes is not None
    assert retried.events[0].attributes["exception.message"] == "first try fails"
    chat = spans[f"chat {MODEL}"]
    assert chat.kind == SpanKind.CLIENT
    attrs = chat.attributes
    assert attrs is not None
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["outlast.llm.provider"] == "primary"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert list(attrs["gen_ai.response.finish_reasons"]) in (["length"], ["stop"])
    # The step's timing is the event log's: step.started .. step.completed.
    events = [e async for e in RedisStore(redis).read_events(run_id, follow=False)]
    (started,) = [e for e in events if e.type == ev.STEP_STARTED and e.data["name"] == "outer"]
    assert spans["outer"].start_time == int(started.ts * 1e9)
    assert memory.get_finished_spans()[0].resource.attributes["service.name"] == "outlast"


async def test_an_interrupted_attempt_is_exported_by_the_next_with_its_open_step(
    redis: aioredis.Redis, exporter: OtelExporter, memory: InMemorySpanExporter
) -> None:
    """Attempt 1 dies inside a step (its task is cancelled, as a crash leaves it: nothing more is
    written) and exports nothing; attempt 2's export covers both attempts, each span once."""
    entered = asyncio.Event()
    release = asyncio.Event()

    @outlast.component
    async def slow() -> str:
        entered.set()
        await release.wait()
        return "done"

    @outlast.workflow(name="otel_interrupted")
    async def interrupted() -> str:
        await inner(1)
        return await slow()

    store = RedisStore(redis)
    runner = outlast.Runner(store, worker_id="w-lost")
    run_id = await runner.start(interrupted)
    first = asyncio.create_task(runner.execute(interrupted, run_id))
    await entered.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    runner.worker_id = "w-taker"
    outcome = await runner.execute(interrupted, run_id)
    assert outcome.status == "completed"
    assert await exporter.attempt_ended(run_id, 2) is None
    assert await exporter.export_run(run_id) == 0  # every span was marked exported
    spans = list(memory.get_finished_spans())
    tree = check_tree(spans, run_id)
    lost = tree["attempt 1"]
    assert lost.attributes is not None
    assert (lost.attributes["outlast.worker"], lost.attributes["outlast.attempt.outcome"]) == (
        "w-lost",
        "interrupted",
    )
    assert lost.status.status_code == StatusCode.ERROR
    taker = tree["attempt 2"]
    assert taker.attributes is not None
    assert taker.attributes["outlast.worker"] == "w-taker"
    assert lost.end_time is not None
    assert taker.start_time is not None
    assert lost.end_time <= taker.start_time
    slows = sorted((s for s in spans if s.name == "slow"), key=lambda s: s.start_time or 0)
    assert [s.status.status_code for s in slows] == [
        StatusCode.ERROR,  # open when attempt 1 died: ends with it
        StatusCode.UNSET,
    ]
    assert [s.parent.span_id for s in slows if s.parent] == [lost.context.span_id, taker.context.span_id]
    inners = [s for s in spans if s.name == "inner"]
    assert len(inners) == 1  # completed in attempt 1, replayed (not re-run) by attempt 2


async def test_a_wait_span_hangs_under_the_run_and_spans_the_suspension(
    redis: aioredis.Redis, exporter: OtelExporter, memory: InMemorySpanExporter
) -> None:
    @outlast.workflow(name="otel_napper")
    async def napper() -> str:
        await outlast.sleep(1.2)  # beyond the worker's hold: the run suspends, then resumes
        return await inner(2) and "woke"

    run_id = (await Dispatcher(redis).start(napper)).run_id
    worker = Worker([napper], redis, observer=exporter, heartbeat=0.2, lease_timeout=1.0)
    task = asyncio.create_task(worker.run())
    try:
        assert await Dispatcher(redis).result(run_id, timeout=20) == "woke"
    finally:
        worker.stop()
        await task
    tree = check_tree(list(memory.get_finished_spans()), run_id)
    assert {"attempt 1", "attempt 2", "sleep", "inner"} <= set(tree)
    assert tree["attempt 1"].attributes is not None
    assert tree["attempt 1"].attributes["outlast.attempt.outcome"] == "suspended"
    sleep = tree["sleep"]
    assert sleep.parent is not None
    assert sleep.parent.span_id == span_id_of(run_id, "run")
    assert sleep.end_time is not None
    assert sleep.start_time is not None
    assert (sleep.end_time - sleep.start_time) / 1e9 >= 1.2


def test_nothing_of_opentelemetry_is_imported_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OUTLAST_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not otel_enabled()
    assert otel_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not otel_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OUTLAST_OTEL": "0"})
    assert not otel_enabled({"OUTLAST_OTEL": "1", "OTEL_SDK_DISABLED": "true"})
    code = (
        "import json, sys\n"
        "import outlast, outlast.cli.main, outlast.cli.compute, outlast.worker.worker\n"
        "from outlast.observe import observer_from_env\n"
        "assert observer_from_env(None) is None\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OUTLAST_OTEL"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(done.stdout) == []


def test_attributes_of_an_llm_span_follow_the_genai_conventions_names() -> None:
    """Names checked against the semantic-conventions package the SDK ships with."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

    names: dict[str, Any] = {
        "gen_ai.system": gen_ai.GEN_AI_SYSTEM,
        "gen_ai.operation.name": gen_ai.GEN_AI_OPERATION_NAME,
        "gen_ai.request.model": gen_ai.GEN_AI_REQUEST_MODEL,
        "gen_ai.response.model": gen_ai.GEN_AI_RESPONSE_MODEL,
        "gen_ai.usage.input_tokens": gen_ai.GEN_AI_USAGE_INPUT_TOKENS,
        "gen_ai.usage.output_tokens": gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS,
        "gen_ai.response.finish_reasons": gen_ai.GEN_AI_RESPONSE_FINISH_REASONS,
    }
    assert all(ours == theirs for ours, theirs in names.items())
