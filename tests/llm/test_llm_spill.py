"""Fleet-wide limits through Redis: spill-over when the primary is exhausted, waiting for capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import events as ev
from outlast.llm import LLM, BreakerSettings, CircuitBreaker, Completion, Limits, RateLimiter
from outlast.llm.limits import Grant
from outlast.llm.simulator import SimulatorServer
from outlast.store.redis import RedisStore

from .llm_support import all_events, openai_provider, provider, requests, statuses


@pytest.fixture
def workers(fleet: Callable[[int], list[aioredis.Redis]]) -> list[aioredis.Redis]:
    return fleet(3)


async def test_spill_over_keeps_the_primary_within_its_limit(
    primary: SimulatorServer, fallback: SimulatorServer, workers: list[aioredis.Redis]
) -> None:
    limit = 10
    primary.knobs.rpm_limit = limit  # the provider enforces the same limit we configure
    llms = [
        LLM(
            [
                openai_provider(primary, limits=Limits(rpm=limit, tpm=None, max_concurrency=None)),
                provider("anthropic", fallback, "fallback"),
            ],
            redis=client,
            max_wait=0.2,
        )
        for client in workers
    ]
    try:
        calls = [llms[i % 3].complete(f"question {i}", max_tokens=8) for i in range(45)]
        done: list[Completion] = await asyncio.gather(*calls)
    finally:
        for llm in llms:
            await llm.aclose()
    served = [c.provider for c in done]
    assert served.count("primary") == limit
    assert served.count("fallback") == 35
    stats = primary.stats()
    assert stats["max_requests_in_any_60s_window"] <= limit
    assert statuses(primary) == {"200": limit}  # no 429 storm: not a single 429
    assert statuses(fallback) == {"200": 35}
    spilled = [c for c in done if c.provider == "fallback"]
    assert all(c.attempts == 1 and c.errors == [] for c in done)
    assert {(f["provider"], f["reason"]) for c in spilled for f in c.fallbacks} == {
        ("primary", "rate_limit_wait")
    }
    assert all(f["limits"] == ["rpm"] and f["retry_after"] > 0.2 for c in spilled for f in c.fallbacks)
    usage = await RateLimiter(workers[0]).usage(
        primary_key := llms[0].providers[0].limit_key, Limits(rpm=limit, tpm=None, max_concurrency=None)
    )
    assert (usage.requests, usage.in_flight, primary_key.provider) == (limit, 0, "primary")
    # the reserved token estimates were settled down to the reported usage
    assert usage.tokens == sum(c.tokens_in + c.tokens_out for c in done if c.provider == "primary")


async def test_tokens_per_minute_reserve_the_estimate_then_settle(
    primary: SimulatorServer, fallback: SimulatorServer, redis: aioredis.Redis
) -> None:
    limits = Limits(rpm=None, tpm=600, max_concurrency=2)
    llm = LLM(
        [openai_provider(primary, limits=limits), openai_provider(fallback, "fallback")],
        redis=redis,
        max_wait=0.1,
    )
    try:
        # Each call reserves its prompt estimate + max_tokens=200 (>= 200 tokens): at most 2
        # reservations fit 600 at once, but settling to the real usage (~40) frees room for more.
        done = [await llm.complete(f"short question {i}", max_tokens=200) for i in range(6)]
    finally:
        await llm.aclose()
    assert {c.provider for c in done} == {"primary"}
    usage = await RateLimiter(redis).usage(llm.providers[0].limit_key, limits)
    assert usage.tokens == sum(c.tokens_in + c.tokens_out for c in done) < 600
    assert usage.in_flight == 0  # every concurrency slot was released


async def test_a_call_waits_for_capacity_and_says_so(primary: SimulatorServer, redis: aioredis.Redis) -> None:
    llm = LLM(
        [openai_provider(primary, limits=Limits(rpm=2, tpm=None, max_concurrency=None, window_s=0.5))],
        redis=redis,
        wait_notice=0.05,
    )

    @outlast.workflow(name="llm_waits")
    async def waits() -> list[float]:
        replies = [await llm.complete(f"ask {i}") for i in range(3)]
        return [r.waited for r in replies]

    store = RedisStore(redis)
    runner = outlast.Runner(store)
    try:
        run_id = await runner.start(waits, {})
        outcome = await runner.execute(waits, run_id)
    finally:
        await llm.aclose()
    assert outcome.status == "completed"
    first, second, third = outcome.result
    assert first == second == 0.0
    assert third > 0.2
    events = await all_events(store, run_id)
    (notice,) = [e for e in events if e.type == ev.LOG]
    assert notice.step == "llm#2"
    assert notice.data["provider"] == "primary"
    assert "waiting up to" in notice.data["message"]
    assert notice.data["reasons"] == ["rpm"]
    assert statuses(primary) == {"200": 3}


async def test_a_half_open_probe_that_spills_over_is_handed_back(
    primary: SimulatorServer, fallback: SimulatorServer, redis: aioredis.Redis
) -> None:
    limits = Limits(rpm=1, tpm=None, max_concurrency=None)
    settings = BreakerSettings(failure_threshold=1, error_rate=None, cooldown_s=0.1, probe_timeout_s=60)
    llm = LLM(
        [openai_provider(primary, limits=limits), openai_provider(fallback, "fallback")],
        redis=redis,
        max_wait=0.1,
        breaker=settings,
        window_margin=0,
    )
    shared = CircuitBreaker(redis, "primary", **settings.__dict__)
    await shared.record_failure()  # the primary's breaker opens ...
    limiter = RateLimiter(redis)
    assert isinstance(await limiter.acquire(llm.providers[0].limit_key, tokens=1, limits=limits), Grant)
    await asyncio.sleep(0.15)  # ... and is half-open, while its rpm is used up for a minute
    try:
        reply = await llm.complete("hello")
        state = await shared.state()
        assert (state.state, state.probes_in_flight) == ("half_open", 0)  # not held for 60 s
        assert [f["reason"] for f in reply.fallbacks] == ["rate_limit_wait"]
        assert reply.provider == "fallback"
    finally:
        await llm.aclose()
    assert requests(primary) == 0
