"""The store's Lua scripts against a real server: fencing, idempotency, seq, retention, reading."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast import serde
from outlast.errors import ProtocolViolation, RunNotFound, StaleAttemptError, StoreError
from outlast.store.base import OP_EXPIRE, OP_META, OP_STEP, AppendItem, NewRun
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore

pytestmark = pytest.mark.redis7


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


async def test_create_run_is_idempotent_and_keys_share_one_slot(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    again = await store.create_run(NewRun(run_id="r1", workflow="other", input={}), envelope("r1", 1))
    assert again is False
    record = await store.get_run("r1")
    assert (record.workflow, record.status, record.attempt, record.last_seq) == ("wf", "queued", 0, 1)
    assert record.input == {"x": 1}
    keys = run_keys("r1").all()
    assert all("{r1}" in key for key in keys)
    events = [e async for e in store.read_events("r1", follow=False)]
    assert [(e.seq, e.type) for e in events] == [(1, ev.RUN_QUEUED)]


async def test_begin_attempt_bumps_the_fence_and_refuses_a_lost_race(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    first = await store.begin_attempt("r1", expected=0)
    assert (first.attempt, first.last_seq) == (1, 1)
    with pytest.raises(StaleAttemptError):
        await store.begin_attempt("r1", expected=0)  # someone else already took attempt 1
    second = await store.begin_attempt("r1")
    assert second.attempt == 2
    assert (await store.get_run("r1")).status == "running"
    with pytest.raises(RunNotFound):
        await store.begin_attempt("nope")


async def test_stale_attempt_cannot_append_or_checkpoint(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    await store.append("r1", 1, [AppendItem(2, envelope("r1", 2))])
    await store.begin_attempt("r1")  # attempt 2 takes over
    stale = AppendItem(3, envelope("r1", 3), ((OP_STEP, "0", b'{"result": 1}'),))
    with pytest.raises(StaleAttemptError) as info:
        await store.append("r1", 1, [stale])
    assert info.value.current == 2
    assert await store.load_steps("r1") == {}
    assert (await store.get_run("r1")).last_seq == 2
    assert await redis.xlen(run_keys("r1").events) == 2


async def test_retried_append_is_a_no_op_and_gaps_are_refused(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    batch = [AppendItem(2, envelope("r1", 2)), AppendItem(3, envelope("r1", 3), ((OP_STEP, "0", b"{}"),))]
    assert await store.append("r1", 1, batch) == 3
    # The same batch again (a retry after a lost reply) plus one new event: only the new one lands.
    assert await store.append("r1", 1, [*batch, AppendItem(4, envelope("r1", 4))]) == 4
    events = [e async for e in store.read_events("r1", follow=False)]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    with pytest.raises(ProtocolViolation):
        await store.append("r1", 1, [AppendItem(6, envelope("r1", 6))])
    assert (await store.get_run("r1")).last_seq == 4


async def test_long_batches_of_meta_updates_and_any_bytes_in_values(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    # 6,000 meta fields in one call: more than Lua can pass to one HSET (unpack's limit).
    items = [
        AppendItem(seq, envelope("r1", seq), ((OP_META, "status_message", f"at {seq}"),
                                              (OP_META, "progress", b'{"n":%d}' % seq)))
        for seq in range(2, 3002)
    ]  # fmt: skip
    assert await store.append("r1", 1, items) == 3001
    record = await store.get_run("r1")
    assert (record.last_seq, record.status_message, record.progress) == (3001, "at 3001", {"n": 3001})
    # Values are framed by length: colons, NULs, non-UTF-8 bytes pass through untouched.
    odd = b"a:b\x00\xff:12:"
    await store.append("r1", 1, [AppendItem(3002, envelope("r1", 3002), ((OP_STEP, "odd", odd),))])
    assert await redis.hget(run_keys("r1").steps, "odd") == odd
    # A gap after a meta update in the same call: what was written before the gap is kept whole.
    kept = AppendItem(3003, envelope("r1", 3003), ((OP_META, "status_message", "kept"),))
    with pytest.raises(ProtocolViolation):
        await store.append("r1", 1, [kept, AppendItem(3005, envelope("r1", 3005))])
    record = await store.get_run("r1")
    assert (record.last_seq, record.status_message) == (3003, "kept")


async def test_terminal_event_sets_status_and_expires_every_run_key(redis: aioredis.Redis) -> None:
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
    record = await store.get_run("r1")
    assert (record.status, record.result) == ("completed", 42)
    keys = run_keys("r1")
    for key in (keys.meta, keys.events, keys.steps):
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 60, key
    with pytest.raises(StoreError):
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


async def test_tailing_reader_sees_every_event_once_without_a_seam(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    await store.append("r1", 1, [AppendItem(seq, envelope("r1", seq)) for seq in range(2, 50)])
    seen: list[int] = []
    reading = asyncio.Event()

    async def reader() -> None:
        async for event in store.read_events("r1", after=0, block_ms=200):
            seen.append(event.seq)
            if event.seq == 49:
                reading.set()

    task = asyncio.create_task(reader())
    await reading.wait()  # history replayed; now the tail is live
    for start in range(50, 250, 20):
        await store.append(
            "r1", 1, [AppendItem(seq, envelope("r1", seq)) for seq in range(start, start + 20)]
        )
    done = ((OP_META, "status", "completed"), (OP_EXPIRE, "60", ""))
    await store.append("r1", 1, [AppendItem(250, envelope("r1", 250, ev.RUN_COMPLETED), done)])
    await asyncio.wait_for(task, 10)
    assert seen == list(range(1, 251))


async def test_reading_an_unknown_run_is_a_clear_error(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    with pytest.raises(RunNotFound):
        [e async for e in store.read_events("missing", follow=False)]
    with pytest.raises(RunNotFound):
        await store.get_run("missing")


async def test_a_gap_inside_a_batch_keeps_last_seq_true_to_what_was_written(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    with pytest.raises(ProtocolViolation):
        await store.append("r1", 1, [AppendItem(2, envelope("r1", 2)), AppendItem(4, envelope("r1", 4))])
    assert (await store.get_run("r1")).last_seq == 2
    assert await store.append("r1", 1, [AppendItem(3, envelope("r1", 3))]) == 3
    assert [e.seq for e in [e async for e in store.read_events("r1", follow=False)]] == [1, 2, 3]


async def test_framed_batch_carries_binary_and_unicode_side_effects(redis: aioredis.Redis) -> None:
    store = RedisStore(redis)
    await new_run(store)
    await store.begin_attempt("r1")
    value = "naïve: 12:34 — ünïcödé".encode() + b"\x00\xff:"
    ops = ((OP_STEP, "pos:1", value), (OP_META, "status_message", "a:b:c"))
    await store.append("r1", 1, [AppendItem(2, envelope("r1", 2), ops)])
    assert (await store.load_steps("r1"))["pos:1"] == value
    assert (await store.get_run("r1")).status_message == "a:b:c"
