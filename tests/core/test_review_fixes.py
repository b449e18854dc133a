"""Regressions found in review: each would break a run's stream or its durability."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import events as ev


async def test_an_oversized_result_fails_the_run_clearly() -> None:
    @outlast.workflow
    async def huge() -> str:
        return "x" * (2 << 20)

    run = await outlast.run_local(huge)
    assert run.status == "failed"
    assert run.error is not None
    assert "exceeds" in run.error["message"]
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))


async def test_an_unencodable_log_raises_without_leaving_a_seq_gap() -> None:
    @outlast.workflow
    async def chatty() -> str:
        outlast.status(42)  # type: ignore[arg-type]  # coerced, not fatal
        with pytest.raises(outlast.SerializationError):
            outlast.log("hello", extra=object())
        outlast.status("after")
        return "ok"

    run = await outlast.run_local(chatty)
    assert (run.status, run.result) == ("completed", "ok")
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
    assert [e.data["message"] for e in run.events if e.type == ev.STATUS] == ["42", "after"]


async def test_a_stray_cancelled_error_from_workflow_code_fails_the_run() -> None:
    @outlast.workflow
    async def confused() -> None:
        raise asyncio.CancelledError

    run = await outlast.run_local(confused)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "CancelledError"


async def test_a_step_cancelled_while_its_commit_is_in_flight_is_not_run_again(redis: aioredis.Redis) -> None:
    ran = {"a": 0, "b": 0}

    @outlast.component
    async def a() -> int:
        ran["a"] += 1
        return 1

    @outlast.component
    async def b() -> int:
        ran["b"] += 1
        if ran["b"] == 1:
            raise ConnectionError("first try fails")
        return 2

    @outlast.workflow(retry=outlast.Retry(attempts=2, backoff_base=0, jitter=False))
    async def pair() -> list[int]:
        return await outlast.gather(a(), b())  # b's failure cancels a while a commits

    store = outlast.RedisStore(redis)  # a real round trip: the cancellation lands mid-commit
    runner = outlast.Runner(store)
    run_id = await runner.start(pair)
    outcome = await runner.execute(pair, run_id)
    assert (outcome.status, outcome.result) == ("completed", [1, 2])
    assert ran["a"] == 1
    events = [e async for e in store.read_events(run_id, follow=False)]
    assert [e.step for e in events if e.type == ev.STEP_COMPLETED].count("a#0") == 1
