"""The single writer of one run attempt's events.

Workflow code never waits on Redis to emit a status or an output chunk: events get their seq
at once (in call order) and go into a queue; one flusher task writes everything queued in a
single fenced Lua call, so a burst of events costs one round trip (group commit). A step's
checkpoint rides in the same call as its ``step.completed`` event and is awaited.

Output chunks are coalesced per step into frames, flushed after ``flush_interval`` seconds
or ``frame_chars`` characters, and always before the step's next lifecycle event.

When the store refuses a write because another attempt owns the run, the writer stops for
good and calls ``on_fenced`` so the runner can abandon the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from outlast import events as ev
from outlast import serde
from outlast.errors import (
    ProtocolViolation,
    RunEnded,
    SerializationError,
    StaleAttemptError,
    StoreUnavailable,
)
from outlast.masking import Secrets
from outlast.sizes import MAX_EVENT_BYTES, text_piece_chars
from outlast.store.base import AppendItem, Op, RunStore

MAX_BATCH = 256


@dataclass
class _OutputBuffer:
    attempt_try: int
    texts: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    chars: int = 0
    timer: asyncio.TimerHandle | None = None


class EventWriter:
    def __init__(
        self,
        store: RunStore,
        run_id: str,
        attempt: int,
        next_seq: int,
        *,
        secrets: Secrets,
        on_fenced: Callable[[BaseException], None],
        flush_interval: float = 0.03,
        frame_chars: int = 512,
        store_retry_for: float = 30.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.secrets = secrets
        self.flush_interval = flush_interval
        self.frame_chars = frame_chars
        self.store_retry_for = store_retry_for
        self.max_event_bytes = max_event_bytes
        self._piece_chars = text_piece_chars(max_event_bytes)  # of text in one output frame
        self._on_fenced = on_fenced
        self._next_seq = next_seq
        self._pending: list[tuple[AppendItem, asyncio.Future[None] | None]] = []
        self._outputs: dict[str, _OutputBuffer] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        #: Set once the terminal event is queued: later events are refused.
        self.closed = False
        self.last_written = next_seq - 1
        self._barrier: asyncio.Future[None] | None = None

    # -- producing -------------------------------------------------------------------------

    def event(self, type: str, step: str | None, data: dict[str, Any], ops: Sequence[Op] = ()) -> None:
        """Queue an event; it is written soon, in order. Safe to call from worker threads."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.event, type, step, data, ops)
            return
        self._queue(type, step, data, ops, None)

    async def commit(self, type: str, step: str | None, data: dict[str, Any], ops: Sequence[Op] = ()) -> None:
        """Queue an event and wait until it (and everything before it) is durable."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue(type, step, data, ops, future)
        await future

    def checkpoint(self, type: str, step: str | None, data: dict[str, Any], ops: Sequence[Op] = ()) -> None:
        """Queue an event that must be durable before the run's next side effect, without waiting.

        A step's ``step.completed`` goes this way: the workflow code after it (deterministic, no
        side effects of its own) runs on at once, and the next step first awaits :meth:`barrier`.
        So a run's last step, its completion and ``run.completed`` share one round trip, and a
        crash before the write replays the step, as a crash before an awaited commit would.
        """
        future: asyncio.Future[None] = self._loop.create_future()
        future.add_done_callback(_retrieved)  # a failed write is reported through _fail/on_fenced
        self._queue(type, step, data, ops, future)
        self._barrier = future

    async def barrier(self) -> None:
        """Wait until every checkpoint queued so far is durable (events are written in order)."""
        future = self._barrier
        if future is None or future.done():
            if future is not None and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
            return
        await asyncio.shield(future)

    def _queue(
        self,
        type: str,
        step: str | None,
        data: dict[str, Any],
        ops: Sequence[Op],
        future: asyncio.Future[None] | None,
    ) -> None:
        if self.failure is not None:
            if future is not None:
                future.set_exception(self.failure)
            return
        if step is not None and type != ev.OUTPUT and step in self._outputs:
            self.flush_output(step)
        if self.closed:
            # After the terminal event nothing may follow it (e.g. a status() from a thread).
            if future is not None:
                future.set_exception(RunEnded(self.run_id))
            return
        seq = self._next_seq
        # Encode before taking the seq: an event that cannot be written must not leave a gap.
        payload = self._encode(seq, type, step, data)
        self._next_seq += 1
        self._pending.append((AppendItem(seq, payload, tuple(ops)), future))
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._flusher(), name=f"outlast-writer-{self.run_id}")

    def _encode(self, seq: int, type: str, step: str | None, data: dict[str, Any]) -> bytes:
        payload = serde.dumps(
            serde.to_jsonable(
                ev.envelope(
                    seq=seq, type=type, run_id=self.run_id, attempt=self.attempt, step=step, ts=time.time(),
                    data=self.secrets.mask(serde.to_jsonable(data, f"{type} event data")),
                ),
                f"{type} event",
            )
        )  # fmt: skip
        if len(payload) > self.max_event_bytes:
            # A Redis stream entry this large would be kept for days and streamed to every reader.
            where = f"step {step!r}" if step else "from the workflow body"
            raise SerializationError(
                f"{type} event of {len(payload):,} bytes exceeds the {self.max_event_bytes:,}-byte limit "
                f"({where}); store large payloads elsewhere and pass a reference"
            )
        return payload

    def reserve(self, type: str, step: str | None, data: dict[str, Any]) -> AppendItem:
        """Number an event that a script will write (or not) atomically with its own checks.

        Call with nothing queued (after :meth:`drain`); then :meth:`confirm` or :meth:`unreserve`.
        """
        if self._pending or self.failure is not None or self.closed:
            raise ProtocolViolation(f"run {self.run_id}: reserving an event with writes outstanding")
        item = AppendItem(self._next_seq, self._encode(self._next_seq, type, step, data))
        self._next_seq += 1
        return item

    def confirm(self, item: AppendItem) -> None:
        """The reserved event was written and ended the attempt (it suspended the run)."""
        self.last_written = item.seq
        self.closed = True

    def unreserve(self, item: AppendItem) -> None:
        """The reserved event was not written: its seq goes to the next event."""
        if self._next_seq != item.seq + 1:
            raise ProtocolViolation(f"run {self.run_id}: events were numbered after a reserved seq")
        self._next_seq = item.seq

    # -- output coalescing ------------------------------------------------------------------

    def output(self, step: str, chunk: Any, attempt_try: int) -> None:
        """Buffer one chunk of a streaming step's output."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.output, step, chunk, attempt_try)
            return
        buf = self._outputs.get(step)
        is_text = isinstance(chunk, str)
        if is_text and len(chunk) > self._piece_chars:
            # Too large for one frame: split across frames, each under the event size limit.
            # Masked first, whole, so that no secret is cut in two where the mask cannot see it.
            chunk = self.secrets.mask(chunk)
            for start in range(0, len(chunk), self._piece_chars):
                self.output(step, chunk[start : start + self._piece_chars], attempt_try)
            return
        if buf is not None and (
            buf.attempt_try != attempt_try
            or (is_text and (buf.items or buf.chars + len(chunk) > self._piece_chars))
            or (not is_text and buf.texts)
        ):
            self.flush_output(step)
            buf = None
        if buf is None:
            buf = self._outputs[step] = _OutputBuffer(attempt_try)
            buf.timer = self._loop.call_later(self.flush_interval, self.flush_output, step)
        if is_text:
            buf.texts.append(chunk)
            buf.chars += len(chunk)
        else:
            buf.items.append(serde.to_jsonable(chunk, f"output chunk of step {step!r}"))
            buf.chars += 16
        if buf.chars >= self.frame_chars:
            self.flush_output(step)

    def flush_output(self, step: str) -> None:
        buf = self._outputs.pop(step, None)
        if buf is None:
            return
        if buf.timer is not None:
            buf.timer.cancel()
        data: dict[str, Any] = {"try": buf.attempt_try}
        if buf.texts:
            data["text"] = "".join(buf.texts)
        else:
            data["items"] = buf.items
        self._queue(ev.OUTPUT, step, data, (), None)

    def discard_output(self, step: str) -> None:
        buf = self._outputs.pop(step, None)
        if buf is not None and buf.timer is not None:
            buf.timer.cancel()

    # -- flushing ---------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            # One more loop turn before taking the batch: code woken by the same event (the
            # attempt resuming as the body returns) queues its events into this round trip too,
            # so a run's last step.completed and run.completed go together.
            await asyncio.sleep(0)
            self._wake.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[: len(batch)]
                try:
                    await self._write([item for item, _ in batch])
                except Exception as exc:
                    self._fail(exc, batch)
                    return
                self.last_written = batch[-1][0].seq
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
            self._idle.set()

    async def _write(self, items: list[AppendItem]) -> None:
        deadline = time.monotonic() + self.store_retry_for
        delay = 0.05
        while True:
            try:
                await self.store.append(self.run_id, self.attempt, items)
                return
            except StoreUnavailable:
                # The same batch again is safe: seqs already written are skipped by the script.
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _fail(self, exc: BaseException, batch: list[tuple[AppendItem, asyncio.Future[None] | None]]) -> None:
        self.failure = exc
        for _, future in batch + self._pending:
            if future is not None and not future.done():
                future.set_exception(exc)
        self._pending.clear()
        for step in list(self._outputs):
            self.discard_output(step)
        self._idle.set()
        self._on_fenced(exc)

    @property
    def fenced(self) -> bool:
        return isinstance(self.failure, StaleAttemptError)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or the writer failed)."""
        for step in list(self._outputs):
            self.flush_output(step)
        await self._idle.wait()
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        for step in list(self._outputs):
            self.discard_output(step)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: asyncio would log it as "never retrieved"
