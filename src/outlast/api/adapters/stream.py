"""Serving a translated run stream: cursors, catching a translator up, SSE framing.

Every adapter reads the run through the hub, exactly like the native stream (history, then the
live tail, one loop with no seam), and translates each event as it passes. Each SSE frame's
``id:`` is the seq of the event it came from: ``<seq>`` on the event's last frame and
``<seq>.<k>`` on its k-th frame before that, so ``Last-Event-ID`` (or ``?after=``) resumes at
exactly the next frame, even when a connection broke between two frames of one event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from outlast.api.adapters.translate import Translator
from outlast.api.errors import ApiError
from outlast.api.state import ApiState
from outlast.api.streaming import STREAM_HEADERS, parse_cursor, sse_response
from outlast.errors import OutlastError

log = logging.getLogger("outlast.api")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cursor:
    """What the client has: every frame of the events up to ``seq``, or with ``part`` = k only
    the first k frames of event ``seq`` (and everything before it)."""

    seq: int = 0
    part: int = 0

    @property
    def label(self) -> str:
        """The cursor as a frame id: ``SEQ`` or ``SEQ.PART``."""
        return f"{self.seq}.{self.part}" if self.part else str(self.seq)

    @property
    def complete(self) -> int:
        """The last event all of whose frames were delivered."""
        return self.seq - 1 if self.part else self.seq


def parse_frame_cursor(value: str, what: str) -> Cursor:
    seq, dot, part = value.strip().partition(".")
    cursor = Cursor(parse_cursor(seq, what), parse_cursor(part, what) if dot else 0)
    if dot and (cursor.part == 0 or cursor.seq == 0):
        raise ApiError(400, "bad_cursor", f"{what} must be SEQ or SEQ.PART with both >= 1, got {value!r}")
    return cursor


def request_cursor(request: Request) -> Cursor:
    """``Last-Event-ID`` (sent by EventSource on its reconnects) wins over ``?after=``."""
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        return parse_frame_cursor(last_event_id, "Last-Event-ID")
    after = request.query_params.get("after")
    return parse_frame_cursor(after, "after") if after is not None else Cursor()


async def check_cursor(state: ApiState, run_id: str, tenant: str | None, cursor: Cursor) -> None:
    """404 for a run the caller cannot see; 400 for a cursor past the run's last event."""
    last_seq, _ = await state.position(run_id, tenant)
    if cursor.seq > last_seq:
        raise ApiError(
            400,
            "bad_cursor",
            f"cursor {cursor.seq} is past the end of run {run_id} (last seq {last_seq})",
            {"cursor": cursor.seq, "last_seq": last_seq},
        )


def sse_frames(payloads: list[bytes], seq: int, skip: int = 0) -> bytes:
    """The SSE frames of one event's payloads, leaving out the first ``skip``."""
    last = len(payloads)
    return b"".join(
        b"id: %s\ndata: %s\n\n" % (str(seq).encode() if k == last else b"%d.%d" % (seq, k), payload)
        for k, payload in enumerate(payloads[skip:], skip + 1)
    )


async def catch_up(state: ApiState, run_id: str, translator: Translator[Any], through: int) -> None:
    """Feed the events 1..``through`` to ``translator``, discarding its frames."""
    if through <= 0:
        return
    async with contextlib.aclosing(state.hub.history(run_id, 0)) as batches:
        async for batch in batches:
            for frame in batch:
                if frame.seq > through:
                    return
                translator.translate(frame.envelope())
            if batch[-1].seq >= through:
                return


async def translated(
    state: ApiState,
    run_id: str,
    translator: Translator[T],
    cursor: Cursor,
    label: str,
    *,
    opening: Callable[[], list[T]] | None = None,
    closing: bytes = b"",
) -> AsyncIterator[bytes]:
    """The run's events after ``cursor`` through the terminal one, translated, one chunk per batch.

    ``opening`` (called once the translator has caught up, only when resuming) gives frames to
    send first; ``closing`` (a ``data:`` frame) is sent after the terminal event's frames, with
    its seq as id, and alone to a client resuming after the terminal event.
    """
    metrics = state.metrics
    served = metrics.events_served.labels(label)
    active = metrics.streams_active.labels(label)
    active.inc()
    prefix = b"retry: %d\n\n" % state.settings.retry_ms
    dump = translator.dump
    try:
        await catch_up(state, run_id, translator, cursor.complete)
        caught_up_on_end = translator.ended
        # The opening restates the run up to the cursor: its frames carry the cursor itself as
        # id, so a client cut off inside it resumes at the same place (a ``<seq>.<k>`` of their
        # own would name frames of an event the client had already).
        here = cursor.label.encode()
        if opening is not None and cursor.complete > 0:
            prefix += b"".join(b"id: %s\ndata: %s\n\n" % (here, dump(f)) for f in opening())
        async with contextlib.aclosing(state.hub.frames(run_id, cursor.complete)) as batches:
            async for batch in batches:
                if not batch:  # about to wait: let the response start now
                    if prefix:
                        yield prefix
                        prefix = b""
                    continue
                chunk = [prefix]
                for frame in batch:
                    frames = [dump(f) for f in translator.translate(frame.envelope())]
                    skip = cursor.part if frame.seq == cursor.seq else 0
                    if skip and opening is not None:
                        # A re-attach is valid on its own: it restates the frames of this event
                        # the client had (the opening stops before them), under the cursor's id.
                        chunk.extend(b"id: %s\ndata: %s\n\n" % (here, f) for f in frames[:skip])
                    chunk.append(sse_frames(frames, frame.seq, skip))
                    if frame.terminal and closing:
                        chunk.append(b"id: %d\n%s" % (frame.seq, closing))
                prefix = b""
                yield b"".join(chunk)
                served.inc(len(batch))
        if caught_up_on_end and closing:  # resumed after the terminal event: only the end is left
            yield prefix + b"id: %d\n%s" % (cursor.complete, closing)
    except OutlastError as exc:
        log.warning("%s stream ended early: %s", label, exc)  # headers are sent: end; the client resumes
    finally:
        active.dec()


def adapter_response(
    state: ApiState, body: AsyncIterator[bytes], run_id: str, extra: dict[str, str] | None = None
) -> Response:
    return sse_response(state, body, {**STREAM_HEADERS, "X-Outlast-Run-Id": run_id, **(extra or {})})
