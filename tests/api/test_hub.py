"""The fan-out hub in-process, against real Valkey: slow subscribers, late joiners, one feed."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

import outlast
from outlast.api.hub import Frame, Hub
from outlast.store.redis import RedisStore

from .app import ticks


async def test_slow_subscriber_falls_back_to_redis_and_misses_nothing(redis: aioredis.Redis) -> None:
    runner = outlast.Runner(RedisStore(redis))
    run_id = await runner.start(ticks, {"n": 300})
    hub = Hub(redis, block_ms=200, buffer=16, max_queue=8)
    try:
        slow = hub.frames(run_id, 0)
        got: list[Frame] = list(await anext(slow))  # seq 1, read with XRANGE
        assert [f.seq for f in got] == [1]
        assert await anext(slow) == []  # attached to a new feed, about to wait
        assert hub.feeds == 1
        following = asyncio.ensure_future(anext(slow))
        execution = asyncio.create_task(runner.execute(ticks, run_id))
        got += await following
        joiner: list[Frame] = []

        async def join_late() -> None:
            async with contextlib.aclosing(hub.frames(run_id, 1)) as batches:
                async for batch in batches:
                    joiner.extend(batch)

        late = asyncio.create_task(join_late())
        await execution  # 300 more frames while the slow one reads nothing: it overflows
        await late
        async with contextlib.aclosing(slow):
            async for batch in slow:
                got += batch
        assert hub.overflows >= 1
        assert [f.seq for f in got] == list(range(1, 304))
        assert [f.seq for f in joiner] == list(range(2, 304))
        assert hub.feeds == 0  # the feed ended after the terminal event
    finally:
        await hub.close()


async def test_wait_terminal_idle_ticks_and_batches(redis: aioredis.Redis) -> None:
    runner = outlast.Runner(RedisStore(redis))
    run_id = await runner.start(ticks, {"n": 2})
    hub = Hub(redis, block_ms=100)
    try:
        assert not await hub.wait_terminal(run_id, 1, 0.05)
        batches = hub.frames(run_id, 1, idle=0.01)
        async with contextlib.aclosing(batches):
            assert await anext(batches) == []  # caught up, about to wait
            assert await anext(batches) == []  # nothing for `idle` seconds: a keep-alive tick
            await runner.execute(ticks, run_id)
            assert await hub.wait_terminal(run_id, 1, 5)
            rest = [f async for batch in batches for f in batch]
        assert [f.seq for f in rest] == [2, 3, 4, 5]
        assert rest[-1].terminal
        history = [batch async for batch in hub.history(run_id, 0)]
        assert len(history) == 1  # one XRANGE page, one batch (one socket write)
        assert [f.seq for f in history[0]] == [1, 2, 3, 4, 5]
    finally:
        await hub.close()
