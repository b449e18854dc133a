"""What only the Redis store does: one hash slot per run, expiry, exact stream caps.

The rules both stores keep (fencing, idempotency, seq, reading) are in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast import serde
from outlast.errors import RunEnded
from outlast.store.base import OP_EXPIRE, OP_META, OP_STEP, AppendItem, NewRun
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore

pytestmark = [pytest.mark.redis7, pytest.mark.cluster]


def envelope(run_id: str, seq: int, type: str = ev.STATUS, attempt: int = 1) -> bytes:
    return serde.dumps(
        ev.envelope(
            seq=seq, type=type, run_id=run_id, attempt=attempt, step=None, ts=time.time(), data={"n": seq}
        )
    )


async def new_run(store: RedisStore, run_id: str = "r1") -> None:
    created = await store.create_run(
        NewRun(run_id=run_id, workflow="wf", input={"x": 1}), envelope(run_id, 1, ev.RUN_QUEUED, 0)
    )
    assert created


async def test_a_runs_keys_share_one_slot_and_hold_its_state(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    keys = run_keys("r1")
    assert all("{r1}" in key for key in keys.all())
    await store.begin_attempt("r1")
    await store.append("r1", 1, [AppendItem(2, envelope("r1", 2), ((OP_STEP, "odd", b"a:b\x00\xff"),))])
    assert await redis.xlen(keys.events) == 2
    assert await redis.hget(keys.steps, "odd") == b"a:b\x00\xff"


async def test_terminal_event_expires_every_run_key(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    ops = (
        (OP_STEP, "0", b"{}"),
        (OP_META, "status", "completed"),
        (OP_META, "result", b"42"),
        (OP_EXPIRE, "60", ""),
    )
    await store.append("r1", 1, [AppendItem(2, envelope("r1", 2, ev.RUN_COMPLETED), ops)])
    keys = run_keys("r1")
    for key in (keys.meta, keys.events, keys.steps):
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 60, key
    with pytest.raises(RunEnded):
        await store.begin_attempt("r1")  # a finished run never starts again


async def test_capped_stream_reports_the_gap_to_readers(redis: aioredis.Redis) -> None:
    store = RedisStore(redis, max_stream_len=5)
    await new_run(store)
    await store.begin_attempt("r1")
    await store.append("r1", 1, [AppendItem(seq, envelope("r1", seq)) for seq in range(2, 21)])
    assert await redis.xlen(run_keys("r1").events) == 5  # exact trimming, not approximate
    events = [e async for e in store.read_events("r1", after=3, follow=False)]
    assert events[0].type == ev.STREAM_GAP
    assert events[0].data == {"from": 4, "to": 15}
    assert [e.seq for e in events[1:]] == [16, 17, 18, 19, 20]
    # A reader already past the trimmed part sees no gap.
    assert [e.seq for e in [e async for e in store.read_events("r1", after=17, follow=False)]] == [18, 19, 20]


async def test_a_follower_stops_when_the_runs_keys_expire(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    await store.append("r1", 1, [AppendItem(2, envelope("r1", 2))])
    seen: list[int] = []

    async def follow() -> None:
        async for event in store.read_events("r1", after=0, block_ms=50):
            seen.append(event.seq)
            if event.seq == 2:
                await redis.delete(*run_keys("r1").all())  # as the retention expiry would

    await asyncio.wait_for(follow(), 10)
    assert seen == [1, 2]
