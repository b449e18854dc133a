"""LLM calls as durable steps: tokens in the run stream, the trace, stall retries, replay, key masking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast import events as ev
from outlast.core.trace import load_trace
from outlast.llm import LLM, LLMRetry
from outlast.llm.simulator import SimulatorServer
from outlast.store.redis import RedisStore

from .llm_support import KEY, MODEL, PRICE, all_events, openai_provider, provider, requests


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=3, api_keys=[KEY]) as server:
        yield server


@pytest.fixture
def store(redis: aioredis.Redis) -> RedisStore:
    return RedisStore(redis)


@pytest.fixture
async def llm(sim: SimulatorServer, redis: aioredis.Redis) -> AsyncIterator[LLM]:
    client = LLM([openai_provider(sim, price=PRICE, idle_timeout=0.3)], redis=redis,
                 retry=LLMRetry(stream_backoff=0.01))  # fmt: skip
    yield client
    await client.aclose()


class Summary(BaseModel):
    answer: str


async def wait_for(store: RedisStore, run_id: str, type: str, step: str) -> None:
    async for event in store.read_events(run_id, block_ms=200):
        if event.type == type and event.step == step:
            return
    raise AssertionError(f"run ended without {type} {step}")


async def test_streamed_tokens_reach_the_run_and_the_trace_records_the_call(
    llm: LLM, store: RedisStore, redis: aioredis.Redis
) -> None:
    @outlast.workflow(name="llm_story")
    async def story(topic: str) -> str:
        reply = await llm.stream(f"Write about {topic}", max_tokens=20)
        outlast.publish("leak", {"oops": f"key={KEY}"})  # even an accidental echo of the key is masked
        return reply.text

    runner = outlast.Runner(store)
    run_id = await runner.start(story, {"topic": "durability"})
    outcome = await runner.execute(story, run_id)
    assert outcome.status == "completed"
    events = await all_events(store, run_id)
    outputs = [e for e in events if e.type == ev.OUTPUT]
    assert {(e.step, e.data["try"]) for e in outputs} == {("llm#0", 1)}
    assert "".join(e.data["text"] for e in outputs) == outcome.result
    (span,) = await load_trace(store, run_id)
    assert span.name == "llm"
    assert span.status == "completed"
    assert span.tries == 1
    assert span.args == {
        "messages": [{"role": "user", "content": "Write about durability"}],
        "params": {"max_tokens": 20},
        "stream": True,
        "response_model": None,
    }
    result = span.result
    assert (result["provider"], result["model"], result["finish_reason"]) == ("primary", MODEL, "length")
    assert (result["tokens_in"], result["tokens_out"], result["attempts"]) == (3, 20, 1)
    assert result["fallbacks"] == []
    assert result["latency"] > 0
    assert result["cost"] == pytest.approx(PRICE.cost(3, 20))
    raw = b"".join(fields[b"e"] for _, fields in await redis.xrange(f"outlast:run:{{{run_id}}}:events"))
    assert KEY.encode() not in raw
    assert b"key=[secret]" in raw


async def test_a_stalled_stream_is_retried_and_the_client_sees_the_retry(
    llm: LLM, sim: SimulatorServer, store: RedisStore
) -> None:
    sim.knobs.stall_after_tokens = 3
    sim.knobs.stall_requests = 1  # only the first request stalls

    @outlast.workflow(name="llm_stall")
    async def stall() -> str:
        return (await llm.stream("A story that stalls")).text

    runner = outlast.Runner(store)
    run_id = await runner.start(stall, {})
    outcome = await runner.execute(stall, run_id)
    assert outcome.status == "completed"
    events = [e for e in await all_events(store, run_id) if e.step == "llm#0"]
    kinds = [(e.type, e.data.get("try")) for e in events if e.type != ev.OUTPUT or e.data["try"] == 1]
    kinds = list(dict.fromkeys(kinds))  # collapse consecutive try-1 frames
    assert kinds[0] == (ev.STEP_STARTED, None)
    assert kinds[1] == (ev.OUTPUT, 1)
    assert kinds[2] == (ev.STEP_RETRYING, 1)
    retrying = next(e for e in events if e.type == ev.STEP_RETRYING)
    assert retrying.data["error"]["type"] == "StreamInterrupted"
    assert "no chunk for 0.3s" in retrying.data["error"]["message"]
    partial = "".join(e.data["text"] for e in events if e.type == ev.OUTPUT and e.data["try"] == 1)
    assert len(partial.split()) == 3
    after = [e for e in events if e.seq > retrying.seq]
    assert {e.data["try"] for e in after if e.type == ev.OUTPUT} == {2}
    completed = after[-1]
    assert completed.type == ev.STEP_COMPLETED
    assert completed.data["tries"] == 2
    assert completed.data["result"]["attempts"] == 2
    assert [e["type"] for e in completed.data["result"]["errors"]] == ["StreamStalled"]

    # A client following docs/protocol.md §6 (discard S's output on step.retrying) ends with the result.
    shown = ""
    for event in events:
        if event.type == ev.STEP_RETRYING:
            shown = ""
        elif event.type == ev.OUTPUT:
            shown += event.data["text"]
    assert shown == outcome.result == completed.data["result"]["text"]
    assert requests(sim) == 2


async def test_replay_of_finished_llm_steps_makes_no_request(
    llm: LLM, sim: SimulatorServer, store: RedisStore
) -> None:
    gate = asyncio.Event()

    @outlast.component
    async def hold() -> None:
        await gate.wait()

    @outlast.workflow(name="llm_replay")
    async def replay_me() -> dict[str, Any]:
        first = await llm.complete("first question")
        streamed = llm.stream("second question")
        tokens = [token async for token in streamed]
        summary = await llm.complete("third question", response_model=Summary)
        await hold()
        last = await llm.complete("last question")
        return {
            "first": first.text, "second": "".join(tokens), "summary": summary.answer,
            "replayed": streamed.replayed, "last": last.provider,
        }  # fmt: skip

    runner = outlast.Runner(store)
    run_id = await runner.start(replay_me, {})
    task = asyncio.create_task(runner.execute(replay_me, run_id))
    await wait_for(store, run_id, ev.STEP_STARTED, "hold#3")
    task.cancel()  # abandon the attempt, as a crash would
    with pytest.raises(asyncio.CancelledError):
        await task
    assert requests(sim) == 3
    first_attempt = {e.step: e.data["result"] for e in await all_events(store, run_id)
                     if e.type == ev.STEP_COMPLETED}  # fmt: skip

    gate.set()
    outcome = await runner.execute(replay_me, run_id)
    assert outcome.status == "completed"
    assert outcome.attempt == 2
    assert requests(sim) == 4  # only the step that never completed made a request
    assert outcome.result == {
        "first": first_attempt["llm#0"]["text"],
        "second": first_attempt["llm#1"]["text"],
        "summary": first_attempt["llm#2"]["parsed"]["answer"],
        "replayed": True,
        "last": "primary",
    }
    second = [e for e in await all_events(store, run_id) if e.attempt == 2]
    assert {e.step for e in second if e.type == ev.STEP_STARTED} == {"hold#3", "llm#4"}
    assert not [e for e in second if e.type == ev.OUTPUT]


async def test_an_llm_step_fails_when_every_provider_fails(sim: SimulatorServer, store: RedisStore) -> None:
    sim.knobs.error_rate = 1.0
    with SimulatorServer(seed=4, error_rate=1.0) as spare:
        llm = LLM([openai_provider(sim), provider("anthropic", spare, "fallback")], breaker=None,
                  retry=LLMRetry(attempts=2, backoff_base=0.01))  # fmt: skip

        @outlast.workflow(name="llm_doomed")
        async def doomed() -> str:
            return (await llm.complete("hello")).text

        runner = outlast.Runner(store)
        try:
            run_id = await runner.start(doomed, {})
            outcome = await runner.execute(doomed, run_id)
        finally:
            await llm.aclose()
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["type"] == "AllProvidersFailed"
    assert "primary" in outcome.error["message"]
    assert "fallback" in outcome.error["message"]
    failed = [e for e in await all_events(store, run_id) if e.type == ev.STEP_FAILED]
    assert [(e.step, e.data["tries"]) for e in failed] == [("llm#0", 1)]
