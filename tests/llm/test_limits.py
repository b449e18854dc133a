"""Fleet-wide rate limiter against a real server: exact windows, tokens, concurrency leases."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from outlast.errors import ConfigError
from outlast.llm.limits import (
    DEFAULT_COMPLETION_TOKENS,
    Denied,
    Grant,
    LimitKey,
    Limits,
    RateLimiter,
    RateLimitWait,
    estimate_tokens,
)
from outlast.store.keys import llm_concurrency_key, llm_cost_key, llm_window_key

pytestmark = pytest.mark.cluster

KEY = LimitKey("openai", "gpt-4o")
KEY_ARGS = (KEY.provider, KEY.model)


@pytest.fixture
def clients(fleet: Callable[[int], list[aioredis.Redis]]) -> list[aioredis.Redis]:
    return fleet(5)


async def until(probe: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll an observable condition with a bounded deadline."""
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def grants(results: list[Grant | Denied]) -> list[Grant]:
    return [r for r in results if isinstance(r, Grant)]


def denials(results: list[Grant | Denied]) -> list[Denied]:
    return [r for r in results if isinstance(r, Denied)]


@pytest.mark.redis7
async def test_rpm_exact_under_concurrency(clients: list[aioredis.Redis]) -> None:
    limits = Limits(rpm=50, tpm=None, max_concurrency=None)
    limiters = [RateLimiter(c) for c in clients]
    results = await asyncio.gather(
        *(limiters[i % len(limiters)].acquire(KEY, tokens=10, limits=limits) for i in range(200))
    )
    assert len(grants(results)) == 50
    denied = denials(results)
    assert len(denied) == 150
    for d in denied:
        assert d.reasons == ("rpm",)
        assert 0 < d.retry_after <= 60
        assert d.retry_after > 50  # everything was admitted just now: the window frees in ~60 s
    assert len({g.id for g in grants(results)}) == 50


@pytest.mark.redis7
async def test_no_window_ever_exceeds_rpm(clients: list[aioredis.Redis]) -> None:
    """Hammer a 1 s window from several clients until 3 windows' worth is admitted: every 1 s
    window (by server admit time) holds <= rpm grants."""
    limits = Limits(rpm=5, tpm=None, max_concurrency=None, window_s=1.0)
    admitted: list[float] = []
    deadline = time.monotonic() + 15

    async def worker(limiter: RateLimiter) -> None:
        while len(admitted) < 15:
            assert time.monotonic() < deadline, "the window never slid"
            res = await limiter.acquire(KEY, tokens=1, limits=limits)
            if isinstance(res, Grant):
                admitted.append(res.admitted_at)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(worker(RateLimiter(c)) for c in clients))
    admitted.sort()
    for i, t in enumerate(admitted):
        in_window = [u for u in admitted[: i + 1] if u > t - 1.0 + 1e-6]
        assert len(in_window) <= 5
    assert admitted[-1] - admitted[0] >= 2.0 - 1e-6  # 15 grants need at least 3 windows


@pytest.mark.redis7
async def test_retry_after_points_at_oldest_entry(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=2, tpm=None, max_concurrency=None, window_s=1.0)
    first = await limiter.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(first, Grant)
    second = await limiter.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(second, Grant)
    denied = await limiter.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(denied, Denied)
    assert 0 < denied.retry_after <= 1.0
    assert denied.min_retry_after == denied.retry_after
    # the server said when: waiting for it is enough
    start = time.monotonic()
    grant = await limiter.wait_acquire(KEY, tokens=1, limits=limits, max_wait=3.0)
    assert grant.admitted_at >= first.admitted_at + 1.0 - 1e-6
    assert time.monotonic() - start < 1.5


@pytest.mark.redis7
async def test_tokens_limit_and_settle(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=None, tpm=1000, max_concurrency=None)
    a = await limiter.acquire(KEY, tokens=400, limits=limits)
    b = await limiter.acquire(KEY, tokens=400, limits=limits)
    assert isinstance(a, Grant)
    assert isinstance(b, Grant)
    denied = await limiter.acquire(KEY, tokens=400, limits=limits)
    assert isinstance(denied, Denied)
    assert denied.reasons == ("tpm",)
    assert 59 < denied.retry_after <= 60

    # the provider reported far less than estimated: the freed tokens are usable at once
    assert await limiter.settle(a, 100)
    assert await limiter.settle(b, 100)
    assert (await limiter.usage(KEY, limits)).tokens == 200
    c = await limiter.acquire(KEY, tokens=400, limits=limits)
    d = await limiter.acquire(KEY, tokens=400, limits=limits)
    assert isinstance(c, Grant)
    assert isinstance(d, Grant)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Denied)

    # settling upwards counts too
    assert await limiter.settle(c, 500)
    usage = await limiter.usage(KEY, limits)
    assert (usage.requests, usage.tokens) == (4, 1100)


@pytest.mark.redis7
async def test_window_entries_expire_and_settle_after_window_is_noop(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=1, tpm=100, max_concurrency=None, window_s=0.2)
    grant = await limiter.acquire(KEY, tokens=100, limits=limits)
    assert isinstance(grant, Grant)

    async def empty() -> bool:
        usage = await limiter.usage(KEY, limits)
        return usage.requests == 0 and usage.tokens == 0

    await until(empty)
    assert not await limiter.settle(grant, 5)
    assert isinstance(await limiter.acquire(KEY, tokens=100, limits=limits), Grant)


@pytest.mark.redis7
async def test_keys_share_hash_tag_and_expire_when_idle(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=10, tpm=1000, max_concurrency=2)
    grant = await limiter.acquire(KEY, tokens=5, limits=limits, lease_ttl=30)
    assert isinstance(grant, Grant)
    keys = [llm_window_key(*KEY_ARGS), llm_cost_key(*KEY_ARGS), llm_concurrency_key(*KEY_ARGS)]
    tags = {k[k.index("{") : k.index("}") + 1] for k in keys}
    assert len(tags) == 1
    window_ttl, cost_ttl, lease_ttl = [await redis.pttl(k) for k in keys]
    assert 60_000 < window_ttl <= 61_000
    assert 60_000 < cost_ttl <= 61_000
    assert 30_000 < lease_ttl <= 31_000


@pytest.mark.redis7
async def test_concurrency_cap_and_release(clients: list[aioredis.Redis]) -> None:
    limits = Limits(rpm=None, tpm=None, max_concurrency=3)
    limiters = [RateLimiter(c) for c in clients]
    results = await asyncio.gather(
        *(limiters[i % len(limiters)].acquire(KEY, tokens=1, limits=limits) for i in range(20))
    )
    granted = grants(results)
    assert len(granted) == 3
    for d in denials(results):
        assert d.reasons == ("concurrency",)
        assert d.min_retry_after == 0
        assert 100 < d.retry_after <= 120  # the earliest lease expiry bounds the wait
    limiter = limiters[0]
    assert (await limiter.usage(KEY, limits)).in_flight == 3
    assert await limiter.release(granted[0])
    assert not await limiter.release(granted[0])  # idempotent
    again = await limiter.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(again, Grant)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Denied)


@pytest.mark.redis7
async def test_expired_leases_are_reaped(redis: aioredis.Redis) -> None:
    """A worker that crashed without releasing loses its slot when the lease expires."""
    limiter = RateLimiter(redis)
    limits = Limits(rpm=None, tpm=None, max_concurrency=1)
    crashed = await limiter.acquire(KEY, tokens=1, limits=limits, lease_ttl=0.05)
    assert isinstance(crashed, Grant)
    assert crashed.lease_expires_at is not None
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Denied)

    async def free() -> bool:
        return (await limiter.usage(KEY, limits)).in_flight == 0

    await until(free)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Grant)
    assert not await limiter.release(crashed)
    assert await limiter.renew(crashed) is None


@pytest.mark.redis7
async def test_renew_extends_a_live_lease(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=None, tpm=None, max_concurrency=1)
    grant = await limiter.acquire(KEY, tokens=1, limits=limits, lease_ttl=1)
    assert isinstance(grant, Grant)
    assert grant.lease_expires_at is not None
    until_at = await limiter.renew(grant, lease_ttl=30)
    assert until_at is not None
    assert until_at > grant.lease_expires_at + 20


@pytest.mark.redis7
async def test_finish_settles_and_releases_in_one_round_trip(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=None, tpm=1000, max_concurrency=1)
    warm = await limiter.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(warm, Grant)
    assert await limiter.finish(warm, 0) == (True, True)  # loads the script into the server's cache
    grant = await limiter.acquire(KEY, tokens=800, limits=limits)
    assert isinstance(grant, Grant)
    denied = await limiter.acquire(KEY, tokens=250, limits=limits)
    assert isinstance(denied, Denied)
    assert denied.reasons == ("tpm", "concurrency")

    commands: list[Any] = []
    execute = redis.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        commands.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(redis, "execute_command", counting)
    assert await limiter.finish(grant, 300) == (True, True)
    assert commands == ["EVALSHA"]
    monkeypatch.undo()

    usage = await limiter.usage(KEY, limits)
    assert (usage.requests, usage.tokens, usage.in_flight) == (2, 300, 0)
    # the slot and the tokens the estimate over-reserved are free at once
    assert isinstance(await limiter.acquire(KEY, tokens=700, limits=limits), Grant)
    # again: the cost is set (not added to) and the slot is already gone
    assert await limiter.finish(grant, 300) == (True, False)
    assert (await limiter.usage(KEY, limits)).tokens == 1000


@pytest.mark.redis7
async def test_finish_without_a_lease_or_after_the_window(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    uncapped = Limits(rpm=None, tpm=1000, max_concurrency=None)
    grant = await limiter.acquire(KEY, tokens=500, limits=uncapped)
    assert isinstance(grant, Grant)
    assert await limiter.finish(grant, 20) == (True, False)  # no concurrency cap: no slot to free
    assert (await limiter.usage(KEY, uncapped)).tokens == 20
    with pytest.raises(ConfigError):
        await limiter.finish(grant, -1)

    short = Limits(rpm=None, tpm=100, max_concurrency=1, window_s=0.2)
    other = LimitKey("openai", "gpt-4o-mini")
    late = await limiter.acquire(other, tokens=50, limits=short)
    assert isinstance(late, Grant)

    async def window_empty() -> bool:
        return (await limiter.usage(other, short)).requests == 0

    await until(window_empty)
    assert await limiter.finish(late, 10) == (False, True)  # the window forgot it; the lease did not


async def test_wait_acquire_gets_a_released_slot(clients: list[aioredis.Redis]) -> None:
    holder, waiter = RateLimiter(clients[0]), RateLimiter(clients[1])
    limits = Limits(rpm=None, tpm=None, max_concurrency=1)
    held = await holder.acquire(KEY, tokens=1, limits=limits)
    assert isinstance(held, Grant)
    task = asyncio.create_task(waiter.wait_acquire(KEY, tokens=1, limits=limits, max_wait=5))
    await asyncio.sleep(0.1)
    assert not task.done()
    await holder.release(held)
    grant = await asyncio.wait_for(task, 5)
    assert grant.id != held.id


async def test_wait_acquire_spills_over_fast(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=1, tpm=100, max_concurrency=None)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Grant)
    start = time.monotonic()
    with pytest.raises(RateLimitWait) as info:
        await limiter.wait_acquire(KEY, tokens=1, limits=limits, max_wait=2)
    assert time.monotonic() - start < 1  # no point waiting: the window frees in ~60 s
    assert info.value.reasons == ("rpm",)
    assert info.value.retry_after > 50

    with pytest.raises(RateLimitWait) as never:
        await limiter.wait_acquire(KEY, tokens=101, limits=limits, max_wait=2)
    assert math.isinf(never.value.retry_after)


async def test_wait_acquire_gives_up_on_a_held_slot_at_the_deadline(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=None, tpm=None, max_concurrency=1)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Grant)
    start = time.monotonic()
    with pytest.raises(RateLimitWait) as info:
        await limiter.wait_acquire(KEY, tokens=1, limits=limits, max_wait=0.3)
    assert 0.25 < time.monotonic() - start < 1.5
    assert info.value.reasons == ("concurrency",)


async def test_keys_are_independent(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    limits = Limits(rpm=1, tpm=None, max_concurrency=None)
    assert isinstance(await limiter.acquire(KEY, tokens=1, limits=limits), Grant)
    assert isinstance(
        await limiter.acquire(LimitKey("openai", "gpt-4o-mini"), tokens=1, limits=limits), Grant
    )
    assert isinstance(await limiter.acquire(LimitKey("anthropic", "gpt-4o"), tokens=1, limits=limits), Grant)


async def test_validation(redis: aioredis.Redis) -> None:
    with pytest.raises(ConfigError):
        Limits(rpm=0, tpm=None, max_concurrency=None)
    with pytest.raises(ConfigError):
        Limits(rpm=None, tpm=None, max_concurrency=None, window_s=0)
    limiter = RateLimiter(redis)
    with pytest.raises(ConfigError):
        await limiter.acquire(KEY, tokens=-1, limits=Limits(rpm=1, tpm=None, max_concurrency=None))


def test_estimate_tokens() -> None:
    assert estimate_tokens("", max_tokens=0) == 3 + 4
    assert estimate_tokens([{"role": "user", "content": "x" * 400}], max_tokens=100) == 3 + 4 + 100 + 100
    assert estimate_tokens([{"role": "user", "content": "hi"}]) == 3 + 4 + 1 + DEFAULT_COMPLETION_TOKENS
    parts = [{"type": "text", "text": "y" * 40}, {"type": "image_url", "image_url": {"url": "data:"}}]
    assert estimate_tokens([{"role": "user", "content": parts}], max_tokens=0) == 3 + 4 + 10 + 765
    with_tools: list[dict[str, Any]] = [
        {"role": "system", "content": "s" * 8},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
    ]
    assert estimate_tokens(with_tools, max_tokens=0) > 3 + 8 + 2
