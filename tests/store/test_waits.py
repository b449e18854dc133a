"""The wait scripts against a real server: SUSPEND's refusals, RESOLVE settling once, the timer
scan run by several workers at once, and the guard against a lost re-dispatch."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import events as ev
from outlast.core.runner import Runner
from outlast.errors import NotWaiting, StaleAttemptError, StoreError
from outlast.store import keys
from outlast.store.base import AppendItem
from outlast.store.client import redis_from_url
from outlast.store.redis import RedisStore
from outlast.store.waits import RedisWaits, timer_member

pytestmark = pytest.mark.cluster


@outlast.workflow
async def asks(limit: float = 3600) -> str:
    return str(await outlast.wait_for_input("answer", timeout=limit))


async def suspended_run(redis: aioredis.Redis, limit: float = 3600) -> tuple[Runner, str]:
    runner = Runner(RedisStore(redis), hold=0)  # suspend however near the deadline
    run_id = await runner.start(asks, {"limit": limit})
    outcome = await runner.execute(asks, run_id)
    assert outcome.status == "suspended"
    return runner, run_id


def waiting_event(run_id: str, seq: int, attempt: int) -> AppendItem:
    payload = b'{"v":1,"seq":%d,"type":"run.waiting","run_id":"%s","attempt":%d,"step":null,"ts":0,"data":{}}'
    return AppendItem(seq, payload % (seq, run_id.encode(), attempt))


@pytest.mark.redis7
async def test_a_suspended_run_waits_with_no_lease_and_its_timer_armed(redis: aioredis.Redis) -> None:
    runner, run_id = await suspended_run(redis)
    record = await runner.store.get_run(run_id)
    assert (record.status, record.lease_until, record.resumes) == ("waiting", 0, 1)
    assert await redis.zscore(keys.TIMERS, timer_member(run_id, "0")) is not None
    waits = await runner.store.load_waits(run_id)
    assert list(waits) == ["0"]
    last = [e async for e in runner.store.read_events(run_id, follow=False)][-1]
    assert last.type == ev.RUN_WAITING
    [shown] = last.data["waits"]
    assert (shown["position"], shown["kind"], shown["key"]) == ("0", "input", "answer")
    assert shown["deadline"] > 0


@pytest.mark.redis7
async def test_suspend_is_refused_when_a_wait_was_settled_or_a_cancel_asked(redis: aioredis.Redis) -> None:
    runner, run_id = await suspended_run(redis)
    waits = RedisWaits(redis)
    with pytest.raises(StoreError, match="is waiting"):
        await runner.store.begin_attempt(run_id)  # nothing settled it: no attempt may start
    await redis.hset(keys.run_keys(run_id).meta, "status", "queued")  # as if re-queued
    start = await runner.store.begin_attempt(run_id)  # a new attempt, as a resume would take
    seq = start.last_seq + 1
    value = (b'{"value":1}', ev.INPUT_RECEIVED, b"{}")
    first = await waits.settle(run_id, "0", "input", "answer", *value)
    second = await waits.settle(run_id, "0", "input", "answer", *value)
    assert (first.tag, second.tag) == ("live", "mismatch")  # settled once; then nothing is pending
    assert (
        await waits.suspend(run_id, start.attempt, waiting_event(run_id, seq, start.attempt), ["0"])
        == "woken"
    )
    await redis.hset(keys.run_keys(run_id).meta, "cancel_requested", "1")
    assert (
        await waits.suspend(run_id, start.attempt, waiting_event(run_id, seq, start.attempt), []) == "cancel"
    )
    with pytest.raises(StaleAttemptError):
        await waits.suspend(run_id, start.attempt - 1, waiting_event(run_id, seq, start.attempt - 1), [])
    assert (await runner.store.get_run(run_id)).last_seq == start.last_seq  # nothing was written


async def test_many_scanners_settle_each_timer_once(redis: aioredis.Redis, redis_url: str) -> None:
    runs = [await suspended_run(redis, limit=0.05) for _ in range(20)]
    scanners = [RedisWaits(redis_from_url(redis_url)) for _ in range(4)]
    try:
        # Wait for the deadlines by the server's clock, then scan from four "workers" at once.
        due = max([float(s) for _, s in await redis.zrange(keys.TIMERS, 0, -1, withscores=True)])
        await asyncio.sleep(max(0.0, due - await scanners[0].server_ms()) / 1000)
        await asyncio.gather(*(s.fire_due() for s in scanners))
    finally:
        for scanner in scanners:
            await scanner.redis.aclose()
    for runner, run_id in runs:
        events = [e async for e in runner.store.read_events(run_id, follow=False)]
        assert [e.type for e in events].count(ev.INPUT_TIMEOUT) == 1
        assert (await runner.store.get_run(run_id)).status == "queued"
    assert await redis.zcard(keys.TIMERS) == 0
    dispatched = {f[b"run"].decode() for _, f in await redis.xrange(keys.work_stream("dev"))}
    assert dispatched == {run_id for _, run_id in runs}


async def test_a_lost_dispatch_is_made_good_by_the_kick_timer(redis: aioredis.Redis) -> None:
    _, run_id = await suspended_run(redis)
    waits = RedisWaits(redis)
    # As if the process supplying the input died after settling, before dispatching the run:
    run = keys.run_keys(run_id)
    await redis.xtrim(keys.work_stream("dev"), maxlen=0)
    await waits._arm(keys=[keys.TIMERS], args=[timer_member(run_id, "kick"), 0])
    script = waits._resolve
    reply = await script(
        keys=[run.meta, run.events, run.steps, run.waits],
        args=["0", "input", "answer", b'{"value":7}', ev.INPUT_RECEIVED, b'{"key":"answer","value":7}'],
    )
    assert reply[0] == b"REQUEUE"
    assert await redis.xlen(keys.work_stream("dev")) == 0  # lost
    assert await waits.fire_due() >= 1
    assert [f[b"run"].decode() for _, f in await redis.xrange(keys.work_stream("dev"))] == [run_id]
    assert await redis.zscore(keys.TIMERS, timer_member(run_id, "kick")) is None


async def test_a_second_input_for_a_settled_wait_is_refused(redis: aioredis.Redis) -> None:
    _, run_id = await suspended_run(redis)
    waits = RedisWaits(redis)
    first, second = await asyncio.gather(
        waits.supply_input(run_id, "answer", "one"), waits.supply_input(run_id, "answer", "two"),
        return_exceptions=True,
    )  # fmt: skip
    outcomes = sorted([first, second], key=lambda o: isinstance(o, Exception))
    assert outcomes[0] == "resumed"
    assert isinstance(outcomes[1], NotWaiting)
    events = [e async for e in RedisStore(redis).read_events(run_id, follow=False)]
    assert [e.type for e in events].count(ev.INPUT_RECEIVED) == 1
    # The delivery removed its kick and the wait's timeout timer; only the dispatch remains.
    assert await redis.zcard(keys.TIMERS) == 0
    assert await redis.xlen(keys.work_stream("dev")) == 1  # one resume (Runner.start queues nothing)


async def test_a_timer_that_cannot_be_settled_backs_off(redis: aioredis.Redis) -> None:
    _, run_id = await suspended_run(redis)
    await redis.hset(keys.run_keys(run_id).waits, "0", "not json")  # a corrupt record
    member = timer_member(run_id, "0")
    await redis.zadd(keys.TIMERS, {member: 0})
    waits = RedisWaits(redis)
    assert await waits.fire_due() == 0
    retry_at = await redis.zscore(keys.TIMERS, member)
    assert retry_at is not None
    assert retry_at >= await waits.server_ms() + 4_000  # not due again at once
