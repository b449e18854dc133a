"""Provider outage: the shared breaker opens, calls go to the fallback, the breaker closes after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import events as ev
from outlast.llm import LLM, BreakerSettings, CircuitBreaker, LLMRetry
from outlast.llm.simulator import SimulatorServer
from outlast.store.redis import RedisStore

from .llm_support import all_events, openai_provider, provider, requests, statuses, until

SETTINGS = BreakerSettings(failure_threshold=2, error_rate=None, cooldown_s=1.0, probe_timeout_s=5)


@pytest.fixture
def workers(fleet: Callable[[int], list[aioredis.Redis]]) -> list[aioredis.Redis]:
    return fleet(2)


def make_llm(primary: SimulatorServer, fallback: SimulatorServer, redis: aioredis.Redis) -> LLM:
    return LLM(
        [openai_provider(primary), provider("anthropic", fallback, "fallback")],
        redis=redis,
        breaker=SETTINGS,
        retry=LLMRetry(attempts=1),
        max_wait=0.1,
    )


async def test_breaker_opens_for_the_fleet_and_closes_after_the_outage(
    primary: SimulatorServer, fallback: SimulatorServer, workers: list[aioredis.Redis], redis: aioredis.Redis
) -> None:
    a, b = (make_llm(primary, fallback, client) for client in workers)  # two "workers"
    end = time.time() + 1.5
    primary.knobs.outages = [{"start": time.time() - 1, "end": end}]  # type: ignore[list-item]
    shared = CircuitBreaker(redis, "primary")
    try:
        during = [await (a if i % 2 == 0 else b).complete(f"during {i}") for i in range(6)]
        assert [c.provider for c in during] == ["fallback"] * 6
        assert [[f["reason"] for f in c.fallbacks] for c in during] == [["errors"]] * 2 + [
            ["breaker_open"]
        ] * 4
        assert statuses(primary) == {"503": 2}  # opened after the threshold: no further calls
        state = await shared.state()
        assert state.state == "open"
        assert state.opened_until is not None

        await asyncio.sleep(max(0.0, end - time.time()))  # the outage window ends
        served: list[str] = []

        async def back_on_primary() -> bool:
            served.append((await b.complete(f"after {len(served)}")).provider)
            return served[-1] == "primary"

        await until(back_on_primary, within=10, every=0.05)
        assert (await shared.state()).state == "closed"  # the half-open probe succeeded
        after = await a.complete("steady")
        assert (after.provider, after.fallbacks) == ("primary", [])
    finally:
        await a.aclose()
        await b.aclose()
    assert statuses(primary)["503"] == 2


async def test_no_call_is_lost_or_duplicated_in_the_run_stream(
    primary: SimulatorServer, fallback: SimulatorServer, redis: aioredis.Redis
) -> None:
    primary.knobs.outages = [{"start": time.time() - 1, "end": time.time() + 60}]  # type: ignore[list-item]
    llm = make_llm(primary, fallback, redis)
    n = 20

    @outlast.workflow(name="llm_outage_fanout")
    async def fanout(n: int) -> list[str]:
        replies = await outlast.gather(*(llm.stream(f"topic {i}") for i in range(n)), limit=5)
        return [r.provider for r in replies]

    store = RedisStore(redis)
    runner = outlast.Runner(store)
    try:
        run_id = await runner.start(fanout, {"n": n})
        outcome = await runner.execute(fanout, run_id)
    finally:
        await llm.aclose()
    assert outcome.status == "completed"
    assert outcome.result == ["fallback"] * n
    assert statuses(fallback) == {"200": n}
    assert requests(primary) <= 2 + 5  # the threshold, plus calls already under way when it opened
    events = await all_events(store, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completed = {e.step: e.data["result"] for e in events if e.type == ev.STEP_COMPLETED}
    assert sorted(completed) == sorted(f"llm#{i}" for i in range(n))  # every call, once
    assert not [e for e in events if e.type in (ev.STEP_RETRYING, ev.STEP_FAILED)]
    for step, result in completed.items():
        text = "".join(e.data["text"] for e in events if e.type == ev.OUTPUT and e.step == step)
        assert text == result["text"]
        assert result["provider"] == "fallback"
        assert {e.data["try"] for e in events if e.type == ev.OUTPUT and e.step == step} == {1}


async def test_a_cancelled_probe_is_handed_back(primary: SimulatorServer, redis: aioredis.Redis) -> None:
    settings = BreakerSettings(failure_threshold=1, error_rate=None, cooldown_s=0.1, probe_timeout_s=60)
    llm = LLM([openai_provider(primary)], redis=redis, breaker=settings)
    shared = CircuitBreaker(redis, "primary", **settings.__dict__)
    await shared.record_failure()
    await asyncio.sleep(0.15)  # half-open: the next call is the probe
    primary.knobs.stall_after_tokens = 2  # and its reply never comes
    try:
        call = asyncio.ensure_future(llm.complete("hello"))
        await until(lambda: requests(primary) == 1)
        assert (await shared.state()).probes_in_flight == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        state = await shared.state()
        assert (state.state, state.probes_in_flight) == ("half_open", 0)  # the next caller may probe
    finally:
        await llm.aclose()
