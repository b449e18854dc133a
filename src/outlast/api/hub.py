"""Per-process fan-out of run event streams: one ``XREAD BLOCK`` loop per watched run.

A thousand clients watching one run cost one blocking Redis read, not a thousand pooled
connections. Everything is keyed by integer seq, so there is no seam anywhere:

* A subscriber first catches up on its own with non-blocking ``XRANGE`` pages from its cursor.
* When Redis has nothing newer, it attaches to the run's *feed* (creating it at its cursor if
  there is none). A feed tails the stream with ``XREAD BLOCK`` from its own integer cursor and
  keeps the last ``buffer`` frames, so a subscriber whose cursor is inside that window attaches
  synchronously (no await between copying the buffer and registering its queue) and sees every
  later frame. A cursor older than the window catches up with ``XRANGE`` first.
* A subscriber that falls ``max_queue`` frames behind is detached and catches up from Redis again,
  so a slow client costs bounded memory. A feed ends after the terminal event, when its run is
  gone, or when it read something and nobody listens any more.
* Every subscriber checks contiguity itself and yields a ``stream.gap`` frame for trimmed seqs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator
from functools import partial
from typing import Any

from outlast import events as ev
from outlast.errors import StoreUnavailable
from outlast.store.client import RedisClient
from outlast.store.reads import RunReader

log = logging.getLogger("outlast.api")


class Frame:
    """One event as stored (the envelope JSON), pre-encoded once for every subscriber."""

    __slots__ = ("ndjson", "raw", "seq", "sse", "terminal", "type")

    def __init__(self, seq: int, type: str, raw: bytes) -> None:
        self.seq = seq
        self.type = type
        self.raw = raw
        self.terminal = type in ev.TERMINAL_TYPES
        # The stored envelope is compact JSON: it never contains a raw new line.
        self.sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, type.encode(), raw)
        self.ndjson = raw + b"\n"

    @classmethod
    def from_entry(cls, seq: int, raw: bytes) -> Frame:
        return cls(seq, str(json.loads(raw)["type"]), raw)

    def envelope(self) -> dict[str, Any]:
        return dict(json.loads(self.raw))


def gap_frame(run_id: str, cursor: int, next_seq: int) -> Frame:
    """Seqs ``cursor+1 .. next_seq-1`` were trimmed away: say so (seq = the last missing one)."""
    envelope = ev.gap_envelope(run_id, cursor, next_seq)
    return Frame(next_seq - 1, ev.STREAM_GAP, json.dumps(envelope, separators=(",", ":")).encode())


class _Reading:
    """Where one reader of ``frames`` is: its cursor, and whether it said "caught up" yet."""

    __slots__ = ("announced", "cursor", "done", "gap", "run_id")

    def __init__(self, run_id: str, cursor: int) -> None:
        self.run_id = run_id
        self.cursor = cursor
        self.announced = False  # yielded the first empty batch ("caught up, about to wait")
        self.done = False  # the terminal frame was yielded, or nothing more can come
        self.gap = partial(gap_frame, run_id)

    def take(self, frames: list[Frame]) -> list[Frame]:
        """The frames to yield (gaps filled, cut after the terminal one); moves the cursor."""
        batch, self.cursor, terminal = ev.contiguous(self.cursor, frames, self.gap)
        self.done = self.done or terminal
        return batch


class _Subscriber:
    __slots__ = ("queue",)

    def __init__(self) -> None:
        # None = "stop listening here and catch up from Redis" (feed ended, or we fell behind).
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()


class _Feed:
    def __init__(self, run_id: str, cursor: int, buffer: int) -> None:
        self.run_id = run_id
        self.cursor = cursor  # last seq read from Redis
        self.start = cursor  # frames with seq > start are in the buffer (or still to come)
        self.buffer: deque[Frame] = deque(maxlen=buffer)
        self.subscribers: set[_Subscriber] = set()
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def push(self, frame: Frame, max_queue: int) -> int:
        """Buffer ``frame`` and queue it for every subscriber; returns how many fell behind."""
        if len(self.buffer) == self.buffer.maxlen:
            self.start = self.buffer[0].seq
        self.buffer.append(frame)
        self.cursor = frame.seq
        behind = 0
        for sub in list(self.subscribers):
            if sub.queue.qsize() >= max_queue:
                self.subscribers.discard(sub)
                sub.queue.put_nowait(None)
                behind += 1
            else:
                sub.queue.put_nowait(frame)
        return behind

    def attach(self, cursor: int) -> _Subscriber:
        sub = _Subscriber()
        for frame in self.buffer:
            if frame.seq > cursor:
                sub.queue.put_nowait(frame)
        self.subscribers.add(sub)
        return sub

    def end(self) -> None:
        for sub in self.subscribers:
            sub.queue.put_nowait(None)
        self.subscribers.clear()


class Hub:
    """Fans each run's stream out to this process's subscribers."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        block_ms: int = 5_000,
        buffer: int = 1_024,
        max_queue: int = 10_000,
        page: int = 500,
    ) -> None:
        self.redis = redis
        self.reader = RunReader(redis)
        self.block_ms = block_ms
        self.buffer = buffer
        self.max_queue = max_queue
        self.page = page
        self._feeds: dict[str, _Feed] = {}
        self._closed = False
        #: Subscribers detached for falling ``max_queue`` frames behind (they resume from Redis).
        self.overflows = 0

    @property
    def feeds(self) -> int:
        """Runs being tailed right now (one blocking XREAD each)."""
        return len(self._feeds)

    async def close(self) -> None:
        self._closed = True
        feeds = list(self._feeds.values())
        tasks = [feed.task for feed in feeds if feed.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading ----------------------------------------------------------------------------

    async def _page(self, run_id: str, cursor: int) -> tuple[list[Frame], bool]:
        """Stored frames after ``cursor`` (one XRANGE page) and whether the page was full."""
        entries = await self.reader.page(run_id, cursor, self.page)
        return [Frame.from_entry(seq, raw) for seq, raw in entries], len(entries) == self.page

    async def history(self, run_id: str, after: int) -> AsyncGenerator[list[Frame], None]:
        """Batches of the frames after ``after`` stored now; stops at the end or the terminal event."""
        at = _Reading(run_id, after)
        while True:
            frames, full = await self._page(run_id, at.cursor)
            batch = at.take(frames)
            if batch:
                yield batch
            if at.done or not full:
                return

    async def frames(
        self, run_id: str, after: int, idle: float | None = None, *, fresh: bool = False
    ) -> AsyncGenerator[list[Frame], None]:
        """Every frame after ``after``, history then live, through the terminal event.

        Frames come in batches of whatever is available at once (a page of history, a burst of
        live events), so a stream costs one socket write per batch rather than per event. An
        empty batch means "caught up, about to wait", and with ``idle`` also "nothing arrived
        for that long" (for keep-alives). Ends early (without a terminal frame) if the run's
        keys expire. ``fresh``: the run was just started here, so there is no history to page
        through and it cannot have ended: tail it at once (saves two round trips).
        """
        at = _Reading(run_id, after)
        if fresh and run_id not in self._feeds and not self._closed:
            self._start_feed(run_id, at.cursor)  # its XREAD returns anything already stored at once
        while not at.done:
            feed = self._feeds.get(run_id)
            part = self._follow(feed, at, idle) if self._attachable(feed, at) else self._catch_up(at)
            async with contextlib.aclosing(part) as batches:
                async for batch in batches:
                    yield batch

    @staticmethod
    def _attachable(feed: _Feed | None, at: _Reading) -> bool:
        # The feed's buffer (or what it reads next) holds every frame after the reader's cursor.
        return feed is not None and at.cursor >= feed.start

    async def _catch_up(self, at: _Reading) -> AsyncGenerator[list[Frame], None]:
        """One page of stored history; once nothing is stored after the cursor, make sure a feed
        tails the run (or mark the reading done: the run ended there, or its keys are gone)."""
        frames, full = await self._page(at.run_id, at.cursor)
        batch = at.take(frames)
        if batch:
            yield batch
        if at.done or full or self._attachable(self._feeds.get(at.run_id), at):
            return  # ended, more history, or a feed to attach to
        if self._closed or await self._finished(at.run_id, at.cursor):
            at.done = True
        elif at.run_id not in self._feeds:
            self._start_feed(at.run_id, at.cursor)

    async def _follow(
        self, feed: _Feed | None, at: _Reading, idle: float | None
    ) -> AsyncGenerator[list[Frame], None]:
        """Live frames from ``feed`` until the terminal one, or until the reader is detached
        (the feed ended, or the reader fell ``max_queue`` behind): it then catches up again."""
        if feed is None:
            return
        sub = feed.attach(at.cursor)
        try:
            while not at.done:
                if sub.queue.empty() and not at.announced:
                    at.announced = True
                    yield []
                first = await self._next(sub, idle)
                if first is None:
                    break
                if not isinstance(first, Frame):  # idle: a keep-alive
                    yield []
                    continue
                pending: list[Frame | None] = [first]
                while not sub.queue.empty() and pending[-1] is not None:
                    pending.append(sub.queue.get_nowait())
                batch = at.take([f for f in pending if f is not None])
                if batch:
                    yield batch
                if pending[-1] is None:
                    break
        finally:
            feed.subscribers.discard(sub)
        if feed.error is not None and not at.done:
            raise StoreUnavailable(f"reading the events of run {at.run_id} failed: {feed.error}")

    @staticmethod
    async def _next(sub: _Subscriber, idle: float | None) -> Frame | bool | None:
        """The subscriber's next frame; None when detached; False after ``idle`` seconds of nothing."""
        if idle is None:
            return await sub.queue.get()
        try:
            async with asyncio.timeout(idle):
                return await sub.queue.get()
        except TimeoutError:
            return False

    async def wait_terminal(self, run_id: str, after: int, timeout: float, *, fresh: bool = False) -> bool:
        """True once the run's terminal event is stored; False after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(self.frames(run_id, after, fresh=fresh)) as frames:
                    async for batch in frames:
                        if batch and batch[-1].terminal:
                            return True
        except TimeoutError:
            return False
        return False

    async def _finished(self, run_id: str, cursor: int) -> bool:
        """Nothing more will come after ``cursor``: the run ended there, or its keys expired."""
        status, last_seq, _ = await self.reader.position(run_id)
        return ev.ended(status, last_seq, cursor)

    # -- feeds ------------------------------------------------------------------------------

    def _start_feed(self, run_id: str, cursor: int) -> None:
        feed = _Feed(run_id, cursor, self.buffer)
        self._feeds[run_id] = feed
        feed.task = asyncio.create_task(self._tail(feed), name=f"outlast-feed-{run_id}")

    async def _tail(self, feed: _Feed) -> None:
        try:
            while True:
                entries = await self.reader.tail(feed.run_id, feed.cursor, self.page, self.block_ms)
                for seq, raw in entries:
                    frame = Frame.from_entry(seq, raw)
                    self.overflows += feed.push(frame, self.max_queue)
                    if frame.terminal:
                        return
                if not feed.subscribers:
                    return  # nobody listens (a reconnecting client creates a new feed)
                if not entries and await self._finished(feed.run_id, feed.cursor):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken store ends the feed; its subscribers report it
            log.warning("feed of run %s stopped: %s", feed.run_id, exc)
            feed.error = exc
        finally:
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]
            feed.end()
