"""The store contract (``outlast.store.base.RunStore``), run on ``MemoryStore`` and ``RedisStore``.

Every test here runs once per backend (the ``any_store`` fixture): the in-memory store that
``run_local`` uses promises the same fencing, idempotency and reading rules as the real one.
What only Redis does (Lua limits, stream caps, expiry) is tested in ``test_redis_store.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import cast

import pytest

from outlast import events as ev
from outlast import serde
from outlast.errors import ProtocolViolation, RunEnded, RunNotFound, RunWaiting, StaleAttemptError
from outlast.store.base import OP_META, OP_OBJECT, OP_STEP, OP_WAIT, AppendItem, NewRun, RunStore

pytestmark = [pytest.mark.redis7, pytest.mark.cluster]


def envelope(run_id: str, seq: int, type: str = ev.STATUS, attempt: int = 1) -> bytes:
    return serde.dumps(
        ev.envelope(
            seq=seq, type=type, run_id=run_id, attempt=attempt, step=None, ts=time.time(), data={"n": seq}
        )
    )


def items(run_id: str, seqs: range) -> list[AppendItem]:
    return [AppendItem(seq, envelope(run_id, seq)) for seq in seqs]


async def new_run(store: RunStore, run_id: str = "r1", **fields: str) -> None:
    run = NewRun(run_id=run_id, workflow="wf", input={"x": 1}, **fields)  # type: ignore[arg-type]
    assert await store.create_run(run, envelope(run_id, 1, ev.RUN_QUEUED, 0))


async def seqs(store: RunStore, run_id: str = "r1", after: int = 0) -> list[int]:
    return [e.seq async for e in store.read_events(run_id, after, follow=False)]


async def test_create_run_is_idempotent(any_store: RunStore) -> None:
    await new_run(any_store)
    again = await any_store.create_run(NewRun(run_id="r1", workflow="other", input={}), envelope("r1", 1))
    assert again is False
    record = await any_store.get_run("r1")
    assert (record.workflow, record.status, record.attempt, record.last_seq) == ("wf", "queued", 0, 1)
    assert (record.input, record.version, record.started_at) == ({"x": 1}, "dev", None)
    events = [e async for e in any_store.read_events("r1", follow=False)]
    assert [(e.seq, e.type, e.attempt) for e in events] == [(1, ev.RUN_QUEUED, 0)]


async def test_create_run_records_lane_parent_and_extra_fields(any_store: RunStore) -> None:
    run = NewRun(
        run_id="r1.c0", workflow="wf", input={}, version="v2", tenant="acme", extra={"origin": "api"},
        lane="@any", parent="r1",
    )  # fmt: skip
    assert await any_store.create_run(run, envelope("r1.c0", 1, ev.RUN_QUEUED, 0))
    record = await any_store.get_run("r1.c0")
    assert (record.version, record.tenant, record.lane, record.parent) == ("v2", "acme", "@any", "r1")


async def test_begin_attempt_bumps_the_fence_and_refuses_a_lost_race(any_store: RunStore) -> None:
    await new_run(any_store)
    first = await any_store.begin_attempt("r1", expected=0)
    assert (first.attempt, first.last_seq) == (1, 1)
    with pytest.raises(StaleAttemptError) as info:
        await any_store.begin_attempt("r1", expected=0)  # someone else already took attempt 1
    assert (info.value.attempt, info.value.current) == (0, 1)
    second = await any_store.begin_attempt("r1")
    assert second.attempt == 2
    record = await any_store.get_run("r1")
    assert (record.status, record.attempt) == ("running", 2)
    assert record.started_at is not None
    with pytest.raises(RunNotFound):
        await any_store.begin_attempt("nope")


async def test_a_waiting_run_is_not_begun_again(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    await any_store.append("r1", 1, [AppendItem(2, envelope("r1", 2), ((OP_META, "status", "waiting"),))])
    with pytest.raises(RunWaiting):
        await any_store.begin_attempt("r1")
    assert (await any_store.get_run("r1")).attempt == 1


async def test_stale_attempt_cannot_append_or_checkpoint(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    await any_store.append("r1", 1, [AppendItem(2, envelope("r1", 2))])
    await any_store.begin_attempt("r1")  # attempt 2 takes over
    stale = AppendItem(3, envelope("r1", 3), ((OP_STEP, "0", b'{"result": 1}'), (OP_META, "status", "x")))
    with pytest.raises(StaleAttemptError) as info:
        await any_store.append("r1", 1, [stale])
    assert (info.value.attempt, info.value.current) == (1, 2)
    assert await any_store.load_steps("r1") == {}
    record = await any_store.get_run("r1")
    assert (record.last_seq, record.status) == (2, "running")
    assert await seqs(any_store) == [1, 2]


async def test_retried_append_is_a_no_op_and_gaps_are_refused(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    batch = [AppendItem(2, envelope("r1", 2)), AppendItem(3, envelope("r1", 3), ((OP_STEP, "0", b"{}"),))]
    assert await any_store.append("r1", 1, batch) == 3
    # The same batch again (a retry after a lost reply) plus one new event: only the new one lands,
    # and the side effects of the skipped events are not applied again.
    retried = [batch[0], AppendItem(3, envelope("r1", 3), ((OP_STEP, "0", b'"again"'),))]
    assert await any_store.append("r1", 1, [*retried, AppendItem(4, envelope("r1", 4))]) == 4
    assert await seqs(any_store) == [1, 2, 3, 4]
    assert await any_store.load_steps("r1") == {"0": b"{}"}
    with pytest.raises(ProtocolViolation):
        await any_store.append("r1", 1, [AppendItem(6, envelope("r1", 6))])
    assert (await any_store.get_run("r1")).last_seq == 4


async def test_a_gap_inside_a_batch_keeps_last_seq_true_to_what_was_written(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    kept = AppendItem(2, envelope("r1", 2), ((OP_META, "status_message", "kept"),))
    with pytest.raises(ProtocolViolation):
        await any_store.append("r1", 1, [kept, AppendItem(4, envelope("r1", 4))])
    record = await any_store.get_run("r1")
    assert (record.last_seq, record.status_message) == (2, "kept")
    assert await any_store.append("r1", 1, [AppendItem(3, envelope("r1", 3))]) == 3
    assert await seqs(any_store) == [1, 2, 3]


async def test_a_follower_sees_what_a_batch_wrote_before_its_gap(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    follower = cast(AsyncGenerator[ev.Event, None], any_store.read_events("r1", after=1, block_ms=100))
    first = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)  # one loop turn: the follower reads nothing and starts waiting
    with pytest.raises(ProtocolViolation):
        await any_store.append("r1", 1, [AppendItem(2, envelope("r1", 2)), AppendItem(4, envelope("r1", 4))])
    event = await asyncio.wait_for(first, 5)  # seq 2 was written: the follower must be woken
    assert event.seq == 2
    await follower.aclose()


async def test_side_effects_land_with_their_event(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    ops = (
        (OP_STEP, "0", b'{"name":"a"}'),
        (OP_STEP, "e::0", b"1"),
        (OP_OBJECT, "doc", b'{"title":"t"}'),
        (OP_WAIT, "1", b'{"kind":"input","key":"ok"}'),
        (OP_META, "progress", b'{"done":1,"total":2}'),
        (OP_META, "status_message", "half"),
    )
    await any_store.append("r1", 1, [AppendItem(2, envelope("r1", 2), ops)])
    assert await any_store.load_steps("r1") == {"0": b'{"name":"a"}', "e::0": b"1"}
    assert await any_store.load_objects("r1") == {"doc": {"title": "t"}}
    assert await any_store.load_waits("r1") == {"1": b'{"kind":"input","key":"ok"}'}
    record = await any_store.get_run("r1")
    assert (record.progress, record.status_message, record.last_seq) == ({"done": 1, "total": 2}, "half", 2)


async def test_long_batches_of_meta_updates_and_any_bytes_in_values(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    # 6,000 meta fields in one call: more than Lua can pass to one HSET (unpack's limit).
    batch = [
        AppendItem(seq, envelope("r1", seq), ((OP_META, "status_message", f"at {seq}"),
                                              (OP_META, "progress", b'{"n":%d}' % seq)))
        for seq in range(2, 3002)
    ]  # fmt: skip
    assert await any_store.append("r1", 1, batch) == 3001
    record = await any_store.get_run("r1")
    assert (record.last_seq, record.status_message, record.progress) == (3001, "at 3001", {"n": 3001})
    # Values are framed by length: colons, NULs, non-UTF-8 bytes and unicode pass through untouched.
    odd = "naïve: 12:34 — ünïcödé".encode() + b"a:b\x00\xff:12:"
    ops = ((OP_STEP, "pos:1", odd), (OP_META, "status_message", "a:b:c"))
    await any_store.append("r1", 1, [AppendItem(3002, envelope("r1", 3002), ops)])
    assert (await any_store.load_steps("r1"))["pos:1"] == odd
    assert (await any_store.get_run("r1")).status_message == "a:b:c"


async def test_terminal_event_sets_status_and_the_run_never_starts_again(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    ops = ((OP_META, "status", "completed"), (OP_META, "result", b"42"))
    await any_store.append("r1", 1, [AppendItem(2, envelope("r1", 2, ev.RUN_COMPLETED), ops)])
    record = await any_store.get_run("r1")
    assert (record.status, record.result) == ("completed", 42)
    with pytest.raises(RunEnded, match="completed"):
        await any_store.begin_attempt("r1")
    # A follower of a finished run gets its history and stops after the terminal event.
    events = [e async for e in any_store.read_events("r1", block_ms=100)]
    assert [e.type for e in events] == [ev.RUN_QUEUED, ev.RUN_COMPLETED]
    assert [e async for e in any_store.read_events("r1", after=2, block_ms=100)] == []


async def test_reading_after_a_cursor_returns_only_later_events(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    await any_store.append("r1", 1, items("r1", range(2, 12)))
    assert await seqs(any_store, after=7) == [8, 9, 10, 11]
    assert await seqs(any_store, after=11) == []
    assert await seqs(any_store, after=0) == list(range(1, 12))


async def test_tailing_reader_sees_every_event_once_without_a_seam(any_store: RunStore) -> None:
    await new_run(any_store)
    await any_store.begin_attempt("r1")
    await any_store.append("r1", 1, items("r1", range(2, 50)))
    seen: list[int] = []
    reading = asyncio.Event()

    async def reader() -> None:
        async for event in any_store.read_events("r1", after=0, block_ms=200):
            seen.append(event.seq)
            if event.seq == 49:
                reading.set()

    task = asyncio.create_task(reader())
    await reading.wait()  # history replayed; now the tail is live
    for start in range(50, 250, 20):
        await any_store.append("r1", 1, items("r1", range(start, start + 20)))
    done = ((OP_META, "status", "completed"),)
    await any_store.append("r1", 1, [AppendItem(250, envelope("r1", 250, ev.RUN_COMPLETED), done)])
    await asyncio.wait_for(task, 10)
    assert seen == list(range(1, 251))


async def test_an_unknown_run_is_a_clear_error_and_has_no_state(any_store: RunStore) -> None:
    with pytest.raises(RunNotFound):
        [e async for e in any_store.read_events("missing", follow=False)]
    with pytest.raises(RunNotFound):
        await any_store.get_run("missing")
    with pytest.raises(RunNotFound):
        await any_store.append("missing", 1, items("missing", range(2, 3)))
    # The keys of an unknown (or expired) run read as empty, not as an error.
    assert await any_store.load_steps("missing") == {}
    assert await any_store.load_objects("missing") == {}
    assert await any_store.load_waits("missing") == {}
