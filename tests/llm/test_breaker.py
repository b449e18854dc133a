"""Fleet-wide circuit breaker against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from outlast.errors import ConfigError
from outlast.llm.breaker import BreakerSettings, CircuitBreaker, LocalBreaker
from outlast.store.keys import llm_breaker_key

pytestmark = pytest.mark.cluster


@pytest.fixture
def clients(fleet: Callable[[int], list[aioredis.Redis]]) -> list[aioredis.Redis]:
    return fleet(4)


async def until(probe: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll an observable condition with a bounded deadline."""
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def half_open(breaker: CircuitBreaker) -> bool:
    return (await breaker.state()).state == "half_open"


def consecutive(
    redis: aioredis.Redis, cooldown_s: float = 60, half_open_probes: int = 1, probe_timeout_s: float = 60
) -> CircuitBreaker:
    """A breaker that opens on 3 consecutive failures only (no error-rate rule)."""
    return CircuitBreaker(
        redis,
        "openai",
        failure_threshold=3,
        error_rate=None,
        cooldown_s=cooldown_s,
        half_open_probes=half_open_probes,
        probe_timeout_s=probe_timeout_s,
    )


@pytest.mark.redis7
async def test_opens_after_consecutive_failures_and_rejects(redis: aioredis.Redis) -> None:
    breaker = consecutive(redis)
    fresh = await breaker.state()
    assert (fresh.state, fresh.consecutive_failures, fresh.opened_until) == ("closed", 0, None)
    await breaker.record_failure()
    await breaker.record_failure()
    assert await breaker.allow()
    await breaker.record_success()  # a success breaks the streak
    assert (await breaker.state()).consecutive_failures == 0
    for _ in range(2):
        await breaker.record_failure()
    assert (await breaker.state()).state == "closed"
    await breaker.record_failure()
    state = await breaker.state()
    assert state.state == "open"
    assert state.consecutive_failures == 3
    assert state.opened_until is not None
    assert 59 < state.opened_until - time.time() <= 61
    assert not any(await asyncio.gather(*(breaker.allow() for _ in range(10))))
    # stragglers reporting while open neither close it nor extend the cooldown
    await breaker.record_success()
    await breaker.record_failure()
    after = await breaker.state()
    assert (after.state, after.opened_until) == ("open", state.opened_until)
    assert 60_000 < await redis.pttl(llm_breaker_key("openai")) <= 120_000


@pytest.mark.redis7
async def test_state_is_shared_by_the_fleet(clients: list[aioredis.Redis]) -> None:
    breakers = [consecutive(c) for c in clients]
    for b in breakers[:3]:
        await b.record_failure()
    assert not await breakers[3].allow()
    assert CircuitBreaker(clients[0], "anthropic").provider == "anthropic"
    assert await CircuitBreaker(clients[0], "anthropic").allow()  # per provider


@pytest.mark.redis7
async def test_half_open_admits_exactly_one_probe_and_success_closes(clients: list[aioredis.Redis]) -> None:
    # The cooldown outlasts a loaded machine's first round trips (a cluster client maps its slots
    # on first use): with 0.2 s the breaker was sometimes half-open before the refusal was checked.
    breakers = [consecutive(c, cooldown_s=1.5) for c in clients]
    for _ in range(3):
        await breakers[0].record_failure()
    assert not await breakers[1].allow()
    await until(lambda: half_open(breakers[0]))
    admitted = await asyncio.gather(*(breakers[i % 4].allow() for i in range(40)))
    assert sum(admitted) == 1
    assert (await breakers[2].state()).probes_in_flight == 1
    await breakers[3].record_success()
    state = await breakers[0].state()
    assert (state.state, state.consecutive_failures, state.probes_in_flight) == ("closed", 0, 0)
    assert (state.window_calls, state.window_failures, state.opened_until) == (0, 0, None)
    assert all(await asyncio.gather(*(b.allow() for b in breakers)))


@pytest.mark.redis7
async def test_failed_probe_reopens(redis: aioredis.Redis) -> None:
    breaker = consecutive(redis, cooldown_s=0.2)
    for _ in range(3):
        await breaker.record_failure()
    first_open = (await breaker.state()).opened_until
    assert first_open is not None
    await until(lambda: half_open(breaker))
    assert await breaker.allow()
    assert not await breaker.allow()
    await breaker.record_failure()
    state = await breaker.state()
    assert state.state == "open"
    assert state.opened_until is not None
    assert state.opened_until > first_open
    assert not await breaker.allow()
    # and after the next cooldown a probe is admitted again
    await until(lambda: half_open(breaker))
    assert await breaker.allow()


@pytest.mark.redis7
async def test_several_probes(redis: aioredis.Redis) -> None:
    breaker = consecutive(redis, cooldown_s=0.1, half_open_probes=3)
    for _ in range(3):
        await breaker.record_failure()
    await until(lambda: half_open(breaker))
    assert sum(await asyncio.gather(*(breaker.allow() for _ in range(12)))) == 3


@pytest.mark.redis7
async def test_lost_probe_times_out(redis: aioredis.Redis) -> None:
    """A probe whose worker crashed does not keep the breaker half-open forever."""
    breaker = consecutive(redis, cooldown_s=0.1, probe_timeout_s=0.2)
    for _ in range(3):
        await breaker.record_failure()
    await until(lambda: half_open(breaker))
    assert await breaker.allow()
    assert not await breaker.allow()

    async def probe_slot_free() -> bool:
        return (await breaker.state()).probes_in_flight == 0

    await until(probe_slot_free)
    assert await breaker.allow()


@pytest.mark.redis7
async def test_a_cancelled_probe_frees_its_slot_at_once(redis: aioredis.Redis) -> None:
    """A probe whose call went elsewhere is handed back instead of blocking until probe_timeout_s."""
    breaker = consecutive(redis, cooldown_s=0.1, probe_timeout_s=60)
    assert await breaker.admit() == "call"
    for _ in range(3):
        await breaker.record_failure()
    assert await breaker.admit() is None
    await breaker.cancel_probe()  # open: nothing to hand back
    assert (await breaker.state()).state == "open"
    await until(lambda: half_open(breaker))
    assert await breaker.admit() == "probe"
    assert await breaker.admit() is None
    await breaker.cancel_probe()
    state = await breaker.state()
    assert (state.state, state.probes_in_flight) == ("half_open", 0)
    await breaker.cancel_probe()  # no probe out: the count does not go below zero
    assert (await breaker.state()).probes_in_flight == 0
    assert await breaker.admit() == "probe"  # the next caller probes now, not a minute later
    assert await breaker.admit() is None
    await breaker.record_success()
    await breaker.cancel_probe()  # closed: a no-op
    state = await breaker.state()
    assert (state.state, state.probes_in_flight) == ("closed", 0)
    assert await breaker.admit() == "call"


async def test_local_breaker_hands_back_a_probe() -> None:
    breaker = LocalBreaker(BreakerSettings(failure_threshold=1, cooldown_s=0.05, probe_timeout_s=60))
    assert await breaker.admit() == "call"
    await breaker.record_failure()
    assert await breaker.admit() is None
    await breaker.cancel_probe()
    assert breaker.state == "open"
    await asyncio.sleep(0.06)
    assert await breaker.admit() == "probe"
    assert not await breaker.allow()
    await breaker.cancel_probe()
    await breaker.cancel_probe()
    assert breaker.probes == 0
    assert await breaker.allow()
    await breaker.record_success()
    assert (breaker.state, await breaker.admit()) == ("closed", "call")


@pytest.mark.redis7
async def test_error_rate_opens(redis: aioredis.Redis) -> None:
    breaker = CircuitBreaker(
        redis, "openai", failure_threshold=100, error_rate=0.5, min_calls=10, window_s=60
    )
    # alternate so no streak forms: 4 of 9 failed, below min_calls anyway
    for i in range(9):
        await (breaker.record_failure() if i % 2 else breaker.record_success())
    state = await breaker.state()
    assert (state.state, state.window_calls, state.window_failures) == ("closed", 9, 4)
    await breaker.record_success()  # 4/10 < 0.5
    assert (await breaker.state()).state == "closed"
    await breaker.record_failure()  # 5/11 < 0.5
    assert (await breaker.state()).state == "closed"
    await breaker.record_failure()  # 6/12 >= 0.5
    state = await breaker.state()
    assert state.state == "open"
    assert not await breaker.allow()


@pytest.mark.redis7
async def test_error_rate_window_slides(redis: aioredis.Redis) -> None:
    breaker = CircuitBreaker(
        redis, "openai", failure_threshold=100, error_rate=0.5, min_calls=4, window_s=0.3
    )
    for _ in range(3):
        await breaker.record_failure()

    async def window_empty() -> bool:
        return (await breaker.state()).window_calls == 0

    await until(window_empty)
    await breaker.record_failure()  # 1/1: below min_calls, the old failures no longer count
    assert (await breaker.state()).state == "closed"


def test_validation(redis: aioredis.Redis) -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(redis, "p", failure_threshold=0)
    with pytest.raises(ConfigError):
        CircuitBreaker(redis, "p", error_rate=1.5)
    with pytest.raises(ConfigError):
        CircuitBreaker(redis, "p", cooldown_s=0)
