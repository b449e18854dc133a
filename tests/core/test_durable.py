"""Durability against a real Valkey: crash mid-run, resume, replay, fencing, determinism, secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import component, workflow
from outlast import events as ev
from outlast.core.trace import load_trace
from outlast.store.embedded import EmbeddedServer
from outlast.store.redis import RedisStore

from . import durable_app
from .durable_app import pipeline

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(redis: aioredis.Redis) -> AsyncIterator[RedisStore]:
    durable_app.COUNTERS.clear()
    durable_app.COUNTERS["redis"] = redis
    yield RedisStore(redis)
    durable_app.COUNTERS.clear()


async def all_events(store: RedisStore, run_id: str) -> list[ev.Event]:
    return [e async for e in store.read_events(run_id, follow=False)]


async def counts(redis: aioredis.Redis) -> dict[str, int]:
    keys = [k async for k in redis.scan_iter("count:*")]  # (every master of a cluster)
    return {k.decode()[6:]: int(await redis.get(k)) for k in sorted(keys)}


def assert_contiguous(events: list[ev.Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def wait_for_event(store: RedisStore, run_id: str, type: str, step: str | None = None) -> ev.Event:
    async for event in store.read_events(run_id, block_ms=200):
        if event.type == type and (step is None or event.step == step):
            return event
    raise AssertionError(f"run ended without {type} {step}")


async def test_run_completes_and_records_everything(store: RedisStore, redis: aioredis.Redis) -> None:
    runner = outlast.Runner(store)
    result = await runner.run(pipeline, {"steps": 3})
    assert result == {"total": 30, "text": "0;10;20;"}
    assert await counts(redis) == {"fetch0": 1, "fetch1": 1, "fetch2": 1, "summarise": 1}
    metas = [k async for k in redis.scan_iter("outlast:run:*:meta")]
    run_id = metas[0].decode().split("{")[1].split("}")[0]
    events = await all_events(store, run_id)
    assert_contiguous(events)
    assert events[-1].type == ev.RUN_COMPLETED
    record = await store.get_run(run_id)
    assert (record.status, record.result, record.last_seq) == ("completed", result, events[-1].seq)
    assert record.progress == {"done": 3, "total": 3, "label": None}
    assert record.status_message == "starting"
    assert await store.load_objects(run_id) == {"summary": {"values": [0, 10, 20]}}


async def test_cancelled_attempt_resumes_without_rerunning_completed_steps(
    store: RedisStore, redis: aioredis.Redis
) -> None:
    runner = outlast.Runner(store)
    run_id = await runner.start(pipeline, {"steps": 5, "block_at": 3})
    task = asyncio.create_task(runner.execute(pipeline, run_id))
    await wait_for_event(store, run_id, ev.STATUS, "block_forever#3")  # its body is running
    task.cancel()  # abandon the attempt, as a crash would
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await store.get_run(run_id)).status == "running"  # nothing terminal was written

    durable_app.COUNTERS["unblock"] = True
    outcome = await runner.execute(pipeline, run_id)
    assert outcome.status == "completed"
    assert outcome.attempt == 2
    assert outcome.result == {"total": 100, "text": "0;10;20;30;40;"}
    c = await counts(redis)
    assert {k: v for k, v in c.items() if k.startswith("fetch")} == {f"fetch{n}": 1 for n in range(5)}
    assert c["block3"] == 2  # never completed in attempt 1, so it ran again
    events = await all_events(store, run_id)
    assert_contiguous(events)
    started = [e for e in events if e.type == ev.RUN_STARTED]
    assert [e.attempt for e in started] == [1, 2]
    assert started[1].data["checkpoints"] == 3
    # Replayed steps emit nothing in attempt 2; neither do status/progress already written.
    second = [e for e in events if e.attempt == 2]
    assert {e.step for e in second if e.type == ev.STEP_COMPLETED} == {
        "block_forever#3",
        "fetch#4",
        "fetch#5",
        "summarise#6",
    }
    # Each once: replay does not emit again what attempt 1 emitted (its step re-ran all the same).
    assert [e.data["message"] for e in events if e.type == ev.STATUS] == ["starting", "blocking at 3"]
    assert [e.data["done"] for e in events if e.type == ev.PROGRESS] == [1, 2, 3, 4, 5]


async def test_sigkilled_process_resumes_from_checkpoints(
    store: RedisStore, redis: aioredis.Redis, redis_url: str
) -> None:
    runner = outlast.Runner(store)
    run_id = await runner.start(pipeline, {"steps": 6, "block_at": 4})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.core.durable_app", redis_url, run_id, env=env, cwd=ROOT
    )
    try:
        await asyncio.wait_for(wait_for_event(store, run_id, ev.STATUS, "block_forever#4"), 30)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    assert await counts(redis) == {"block4": 1, **{f"fetch{n}": 1 for n in range(4)}}

    durable_app.COUNTERS["unblock"] = True
    outcome = await runner.execute(pipeline, run_id)
    assert outcome.status == "completed"
    assert outcome.result == {"total": 150, "text": "0;10;20;30;40;50;"}
    c = await counts(redis)
    assert [c[f"fetch{n}"] for n in range(6)] == [1] * 6
    assert c["summarise"] == 1
    events = await all_events(store, run_id)
    assert_contiguous(events)
    completed = [e.step for e in events if e.type == ev.STEP_COMPLETED]
    assert len(completed) == len(set(completed))  # no step completed twice


async def test_racing_attempts_stale_one_is_fenced_off(store: RedisStore, redis: aioredis.Redis) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    @component
    async def slow(n: int) -> int:
        entered.set()
        await gate.wait()
        return n

    @workflow
    async def racy() -> int:
        first = await slow(1)
        outlast.status("after slow")
        return first + await slow(2)

    runner = outlast.Runner(store)
    run_id = await runner.start(racy)
    old = await runner.begin(racy, run_id)
    old_task = asyncio.create_task(old.run())
    await entered.wait()
    new = await runner.begin(racy, run_id, expected_attempt=1)  # a takeover: attempt 2
    gate.set()
    old_outcome = await old_task
    assert old_outcome.status == "abandoned"
    assert "attempt 1 is stale" in (old_outcome.error or {}).get("message", "")
    new_outcome = await new.run()
    assert (new_outcome.status, new_outcome.result) == ("completed", 3)
    events = await all_events(store, run_id)
    assert_contiguous(events)
    takeover = next(e.seq for e in events if e.type == ev.RUN_STARTED and e.attempt == 2)
    assert all(e.attempt == 2 for e in events if e.seq > takeover)
    # The stale attempt's checkpoint of slow(1) never landed, so attempt 2 ran it.
    assert [e.attempt for e in events if e.type == ev.STEP_COMPLETED] == [2, 2]


async def test_non_determinism_is_detected_and_named(store: RedisStore) -> None:
    variant = {"arg": 1}
    block = asyncio.Event()

    @component
    async def first(x: int) -> int:
        return x

    @component
    async def second() -> None:
        await block.wait()

    def make(lenient: bool) -> outlast.Workflow[Any, Any]:
        @workflow(name="changing", lenient_replay=lenient)
        async def changing() -> int:
            value = await first(variant["arg"])
            await second()
            return value

        return changing

    strict = make(False)
    runner = outlast.Runner(store)
    run_id = await runner.start(strict)
    task = asyncio.create_task(runner.execute(strict, run_id))
    await wait_for_event(store, run_id, ev.STEP_STARTED, "second#1")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    variant["arg"] = 2  # a "deploy" changed what the workflow passes to step 0
    block.set()
    outcome = await runner.execute(strict, run_id)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["reason"] == "non_determinism"
    assert outcome.error["step"] == "first#0"
    assert "first" in outcome.error["message"]
    failed = (await all_events(store, run_id))[-1]
    assert (failed.type, failed.data["reason"]) == (ev.RUN_FAILED, "non_determinism")

    # The same change under lenient replay re-runs the step with a warning instead.
    variant["arg"] = 1
    block.clear()
    lenient = make(True)
    run_id = await runner.start(lenient)
    task = asyncio.create_task(runner.execute(lenient, run_id))
    await wait_for_event(store, run_id, ev.STEP_STARTED, "second#1")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    variant["arg"] = 5
    block.set()
    outcome = await runner.execute(lenient, run_id)
    assert (outcome.status, outcome.result) == ("completed", 5)
    warnings = [e for e in await all_events(store, run_id) if e.type == ev.LOG]
    assert "lenient replay" in warnings[0].data["message"]


async def test_secrets_never_reach_the_stream_or_trace(store: RedisStore, redis: aioredis.Redis) -> None:
    key = "sk-live-0123456789abcdef"

    @component(secret_args=("api_key",))
    async def call_api(prompt: str, api_key: str) -> str:
        outlast.status(f"calling with {api_key}")
        return f"answer for {prompt} (key {api_key})"

    @component
    async def echo(text: str) -> str:
        return text

    @workflow(secret_args=("token",))
    async def uses_secret(prompt: str, token: str) -> str:
        answer = await call_api(prompt, token)
        return await echo(answer)

    runner = outlast.Runner(store)
    run_id = await runner.start(uses_secret, {"prompt": "hi", "token": key})
    outcome = await runner.execute(uses_secret, run_id)
    assert outcome.status == "completed"
    raw = b"".join(fields[b"e"] for _, fields in await redis.xrange(f"outlast:run:{{{run_id}}}:events"))
    assert key.encode() not in raw
    assert b"[secret]" in raw
    trace = await load_trace(store, run_id)
    assert [span.name for span in trace] == ["call_api", "echo"]
    assert trace[0].args == {"prompt": "hi", "api_key": "[secret]"}
    assert key not in "".join(span.model_dump_json() for span in trace)
    # Changing only the secret between attempts is not a non-determinism.
    assert outcome.result == f"answer for hi (key {key})"


async def test_trace_tree_records_retries_and_fallbacks(store: RedisStore) -> None:
    calls = {"flaky": 0}

    @component(retry=outlast.Retry(attempts=3, backoff_base=0.001, jitter=False))
    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError(f"try {calls['flaky']} failed")
        return "ok"

    @component(fallback="default")
    async def broken() -> str:
        raise ValueError("always")

    @component
    async def parent() -> list[str]:
        return [await flaky(), await broken()]

    @workflow
    async def traced() -> list[str]:
        return await parent()

    runner = outlast.Runner(store)
    run_id = await runner.start(traced)
    outcome = await runner.execute(traced, run_id)
    assert outcome.result == ["ok", "default"]
    (root,) = await load_trace(store, run_id)
    assert root.step_id == "parent#0"
    assert [c.step_id for c in root.children] == ["parent#0/flaky#0", "parent#0/broken#1"]
    flaky_span, broken_span = root.children
    assert flaky_span.tries == 3
    assert [r["error"]["message"] for r in flaky_span.retries] == ["try 1 failed", "try 2 failed"]
    assert broken_span.fallback is True
    assert broken_span.error == {"type": "ValueError", "message": "always"}
    assert all(s.status == "completed" for s in (root, flaky_span, broken_span))


async def test_writer_survives_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "restart")
    server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        durable_app.COUNTERS["redis"] = client
        gate = asyncio.Event()

        @component
        async def wait_gate() -> str:
            await gate.wait()
            return "through"

        @workflow
        async def across_restart() -> str:
            outlast.status("before")
            value = await wait_gate()
            outlast.status("after")
            return value

        store = RedisStore(client)
        runner = outlast.Runner(store)
        run_id = await runner.start(across_restart)
        task = asyncio.create_task(runner.execute(across_restart, run_id))
        await wait_for_event(store, run_id, ev.STEP_STARTED, "wait_gate#0")
        server.kill()  # SIGKILL: AOF everysec has the acknowledged writes
        gate.set()  # the step completes while the server is down; its commit must retry
        server.start()
        outcome = await asyncio.wait_for(task, 30)
        assert (outcome.status, outcome.result) == ("completed", "through")
        events = await all_events(store, run_id)
        assert_contiguous(events)
        assert [e.data["message"] for e in events if e.type == ev.STATUS] == ["before", "after"]
    finally:
        durable_app.COUNTERS.clear()
        await client.aclose()
        server.stop()
