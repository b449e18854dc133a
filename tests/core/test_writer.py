"""EventWriter, the single writer of an attempt's events: seq order, output frames, fencing.

Each test runs on ``MemoryStore`` and on ``RedisStore`` (the ``any_store`` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from outlast import events as ev
from outlast.core.writer import MAX_BATCH, EventWriter
from outlast.errors import SerializationError, StaleAttemptError
from outlast.masking import Secrets
from outlast.store.base import OP_STEP, NewRun, RunStore

pytestmark = pytest.mark.cluster

STEP = "write#0"


async def writer_for(store: RunStore, **options: Any) -> tuple[EventWriter, list[BaseException]]:
    """A writer for attempt 1 of a new run ``r1``, and the list its fencing callback fills."""
    run = NewRun(run_id="r1", workflow="wf", input={})
    await store.create_run(run, run.queued_event())
    start = await store.begin_attempt("r1")
    fenced: list[BaseException] = []
    writer = EventWriter(
        store, "r1", start.attempt, start.last_seq + 1, secrets=Secrets(), on_fenced=fenced.append, **options
    )
    return writer, fenced


async def stored(store: RunStore) -> list[ev.Event]:
    return [e async for e in store.read_events("r1", follow=False)]


def frames(events: list[ev.Event]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == ev.OUTPUT]


async def test_concurrent_emitters_get_contiguous_seqs_in_call_order(any_store: RunStore) -> None:
    writer, fenced = await writer_for(any_store)
    per_emitter = 30

    async def emitter(n: int) -> None:
        for i in range(per_emitter):
            if i % 7 == 6:
                await writer.commit(ev.STATUS, None, {"message": "c", "who": n, "i": i})
            else:
                writer.event(ev.STATUS, None, {"message": "e", "who": n, "i": i})
            await asyncio.sleep(0)  # interleave with the other emitters and the flusher

    def thread_emitter(n: int) -> None:  # sync components emit from worker threads
        for i in range(per_emitter):
            writer.event(ev.LOG, None, {"message": "t", "who": n, "i": i})

    tasks = [emitter(n) for n in range(40)]
    threads = [asyncio.to_thread(thread_emitter, 100 + n) for n in range(4)]
    await asyncio.gather(*tasks, *threads)
    await writer.drain()
    await writer.close()

    events = await stored(any_store)
    total = 1 + 44 * per_emitter
    assert total > 4 * MAX_BATCH  # several group commits, written while emitters went on
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert writer.last_written == total
    for who in [*range(40), *range(100, 104)]:
        assert [e.data["i"] for e in events if e.data.get("who") == who] == list(range(per_emitter))
    assert {e.attempt for e in events[1:]} == {1}
    assert fenced == []


async def test_output_is_framed_by_size_and_flushed_before_the_steps_next_event(any_store: RunStore) -> None:
    # The timer never fires here: frames close at frame_chars, or when the step moves on.
    writer, _ = await writer_for(any_store, flush_interval=3600, frame_chars=512)
    writer.event(ev.STEP_STARTED, STEP, {"name": "write"})
    for _ in range(13):
        writer.output(STEP, "x" * 100, 1)  # a frame closes once it holds 512 chars or more
    await writer.commit(ev.STATUS, None, {"message": "from the body"})  # another step: no flush
    assert frames(await stored(any_store)) == [{"try": 1, "text": "x" * 600}, {"try": 1, "text": "x" * 600}]

    writer.output(STEP, "tail", 1)
    await writer.commit(ev.STEP_COMPLETED, STEP, {"name": "write"})
    events = await stored(any_store)
    # The pending 100 chars and the tail went out as one frame, just before step.completed.
    assert [e.type for e in events[-2:]] == [ev.OUTPUT, ev.STEP_COMPLETED]
    assert len(frames(events)) == 3
    assert events[-2].data == {"try": 1, "text": "x" * 100 + "tail"}
    await writer.close()


async def test_items_text_and_tries_never_share_a_frame(any_store: RunStore) -> None:
    writer, _ = await writer_for(any_store, flush_interval=3600, frame_chars=512)
    for n in range(33):
        writer.output(STEP, {"n": n}, 1)  # non-text chunks count 16 chars: 32 fill a frame
    writer.output(STEP, "a", 1)
    writer.output(STEP, "b", 1)
    writer.output(STEP, {"n": "after text"}, 1)
    writer.output(STEP, "retried", 2)
    writer.output("other#1", "parallel", 1)
    await writer.drain()
    assert frames(await stored(any_store)) == [
        {"try": 1, "items": [{"n": n} for n in range(32)]},
        {"try": 1, "items": [{"n": 32}]},
        {"try": 1, "text": "ab"},
        {"try": 1, "items": [{"n": "after text"}]},
        {"try": 2, "text": "retried"},
        {"try": 1, "text": "parallel"},
    ]
    await writer.close()


async def test_a_frame_is_flushed_by_its_timer(any_store: RunStore) -> None:
    writer, _ = await writer_for(any_store, flush_interval=0.03, frame_chars=512)
    follower = cast(AsyncGenerator[ev.Event, None], any_store.read_events("r1", after=1, block_ms=100))
    for chunk in ("Hel", "lo", " "):  # queued in one loop turn: one frame
        writer.output(STEP, chunk, 1)
    first = await asyncio.wait_for(anext(follower), 10)  # nothing but the timer flushes it
    assert (first.type, first.data) == (ev.OUTPUT, {"try": 1, "text": "Hello "})
    writer.output(STEP, "world", 1)
    second = await asyncio.wait_for(anext(follower), 10)
    assert second.data == {"try": 1, "text": "world"}
    await follower.aclose()
    await writer.close()


async def test_a_stale_attempt_is_fenced_off_for_good(any_store: RunStore) -> None:
    writer, fenced = await writer_for(any_store, flush_interval=3600)
    await writer.commit(ev.STATUS, None, {"message": "before the takeover"})
    await any_store.begin_attempt("r1")  # attempt 2 takes the fence

    writer.output(STEP, "partial", 1)
    checkpoint = writer.commit(ev.STEP_COMPLETED, STEP, {"name": "write"}, ((OP_STEP, "0", b"{}"),))
    with pytest.raises(StaleAttemptError) as info:
        await checkpoint
    assert (info.value.attempt, info.value.current) == (1, 2)
    assert writer.fenced
    assert [type(exc) for exc in fenced] == [StaleAttemptError]

    # Nothing the stale attempt queued was written, and nothing it queues later is.
    writer.event(ev.STATUS, None, {"message": "after"})
    with pytest.raises(StaleAttemptError):
        await writer.commit(ev.STATUS, None, {"message": "after, awaited"})
    with pytest.raises(StaleAttemptError):
        await writer.drain()
    events = await stored(any_store)
    assert [(e.seq, e.type) for e in events] == [(1, ev.RUN_QUEUED), (2, ev.STATUS)]
    assert await any_store.load_steps("r1") == {}
    assert len(fenced) == 1  # the runner is told once
    await writer.close()


async def test_an_event_that_cannot_be_written_takes_no_seq(any_store: RunStore) -> None:
    writer, _ = await writer_for(any_store, max_event_bytes=10_000)
    with pytest.raises(SerializationError):
        writer.event(ev.LOG, None, {"message": "x", "extra": object()})
    with pytest.raises(SerializationError, match="exceeds"):
        writer.event(ev.LOG, None, {"message": "x" * 20_000})
    await writer.commit(ev.STATUS, None, {"message": "next"})
    assert [(e.seq, e.type) for e in await stored(any_store)] == [(1, ev.RUN_QUEUED), (2, ev.STATUS)]
    await writer.close()


async def test_a_reserved_seq_goes_to_the_next_event_when_unreserved(any_store: RunStore) -> None:
    writer, _ = await writer_for(any_store)
    await writer.drain()
    item = writer.reserve(ev.RUN_WAITING, None, {"waits": []})
    assert item.seq == 2
    writer.unreserve(item)
    await writer.commit(ev.STATUS, None, {"message": "instead"})
    assert [(e.seq, e.type) for e in await stored(any_store)] == [(1, ev.RUN_QUEUED), (2, ev.STATUS)]
    await writer.close()
