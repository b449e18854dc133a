"""Event streams over HTTP: SSE (default) or NDJSON, resumable from any seq.

SSE frames are ``id: <seq>`` / ``event: <type>`` / ``data: <envelope JSON>``; the stream opens
with a ``retry:`` hint, sends a keep-alive comment when idle, and closes after the terminal
event. NDJSON sends one envelope per line and a blank line as keep-alive. Neither is compressed
(no compression middleware is installed: gzip would buffer frames), and both carry
``X-Accel-Buffering: no`` and ``Cache-Control: no-store`` so proxies pass frames through at once.
An SSE client that stops reading is dropped by the next keep-alive's ``send_timeout``; an NDJSON
one only when TCP gives up.

When the store fails mid-stream, the stream is reopened from the last seq sent for up to
``store_retry`` seconds (the client meanwhile gets keep-alives); after that it ends with an
``error`` event (SSE) or an ``{"error": …}`` line (NDJSON), never silently. A stream with nothing
to send (the run ended at the cursor) is a 204, which tells EventSource to stop reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Send

from outlast.api.errors import ApiError, error_body
from outlast.api.hub import Frame
from outlast.api.schemas import errors_doc
from outlast.api.state import ApiState
from outlast.errors import OutlastError, StoreUnavailable
from outlast.events import TERMINAL_STATUSES

log = logging.getLogger("outlast.api")

router = APIRouter()

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

#: Each frame (SSE) or line (NDJSON) of a stream is one envelope; a stream ended by the store
#: failing ends with a StreamError. (The models are added to the components in app.py.)
STREAM_CONTENT: dict[str, Any] = {
    media: {"schema": {"$ref": "#/components/schemas/EventEnvelope"}} for media in (SSE, NDJSON)
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run's events: SSE by default, NDJSON with Accept: application/x-ndjson. "
        "Each SSE frame's data (each NDJSON line) is an EventEnvelope; a stream the store ended early "
        "ends with an SSE `error` event (an NDJSON line) holding a StreamError.",
        "content": STREAM_CONTENT,
    },
    204: {"description": "Nothing to send: the run ended at the cursor (EventSource stops on 204)."},
}


class EventStream(EventSourceResponse):
    """sse-starlette's response, with the per-send timeout applied to keep-alive pings only.

    The timeout is an anyio cancel scope per send, about a quarter of the cost of delivering one
    event. A half-open client is still dropped: its unread data stalls the connection, so the
    next ping (sent under the response's send lock) times out after ``send_timeout`` and ends the
    response. If sse-starlette renames these internals, every send is simply timed again.
    """

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        lock = getattr(self, "_send_lock", None)
        if lock is None or lock.locked():  # a keep-alive ping (or an sse-starlette we do not know)
            await super()._send_with_timeout(send, message)
        else:
            await send(message)


def stream_format(accept: str | None) -> str | None:
    """``sse``/``ndjson`` when the Accept header asks for a stream, else None."""
    value = (accept or "").lower()
    if SSE in value:
        return "sse"
    if NDJSON in value:
        return "ndjson"
    return None


def parse_cursor(value: str, what: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise ApiError(400, "bad_cursor", f"{what} must be a seq: a non-negative integer, got {value!r}")
    return int(value)


def stream_response(
    state: ApiState,
    batches: AsyncGenerator[list[Frame], None],
    fmt: str,
    run_id: str,
    status_code: int = 200,
) -> Response:
    """Serve ``batches`` as SSE or NDJSON; the iterator is closed when the client goes away."""
    headers = {**STREAM_HEADERS, "X-Outlast-Run-Id": run_id}
    if fmt == "sse":
        return sse_response(state, _encode(state, batches, "sse"), headers, status_code)
    return StreamingResponse(
        _encode(state, batches, "ndjson"), status_code=status_code, headers=headers, media_type=NDJSON
    )


def sse_response(
    state: ApiState, body: AsyncIterator[bytes], headers: dict[str, str], status_code: int = 200
) -> Response:
    """An SSE response of ready-made ``body`` chunks, with keep-alive comments and a send timeout."""
    settings = state.settings
    return EventStream(
        body,
        status_code=status_code,
        headers=headers,
        ping=settings.keepalive,
        sep="\n",
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        send_timeout=settings.send_timeout,  # a half-open client cannot hold the stream forever
    )


async def _encode(
    state: ApiState, batches: AsyncGenerator[list[Frame], None], fmt: str
) -> AsyncIterator[bytes]:
    """One chunk (one socket write) per batch. SSE opens with the ``retry:`` hint, sent with the
    first batch or on its own when the stream has to wait first."""
    metrics = state.metrics
    served = metrics.events_served.labels(fmt)
    active = metrics.streams_active.labels(fmt)
    active.inc()
    prefix = b"retry: %d\n\n" % state.settings.retry_ms if fmt == "sse" else b""
    try:
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if not batch:  # about to wait, or idle
                    if prefix or fmt == "ndjson":
                        yield prefix or b"\n"  # NDJSON keep-alive: clients skip blank lines
                        prefix = b""
                    continue
                if fmt == "sse":
                    yield prefix + b"".join(frame.sse for frame in batch)
                    prefix = b""
                else:
                    yield b"".join(frame.ndjson for frame in batch)
                served.inc(len(batch))
    except OutlastError as exc:
        # Headers are sent: say why the stream ends before its run did, then end it (the client
        # may resume from its last seq; a store still down then answers 503).
        log.warning("event stream ended early: %s", exc)
        code = "store_unavailable" if isinstance(exc, StoreUnavailable) else "stream_failed"
        body = json.dumps(error_body(code, f"the stream ended before the run did: {exc}")).encode()
        yield prefix + (b"event: error\ndata: %s\n\n" % body if fmt == "sse" else body + b"\n")
    finally:
        active.dec()


async def retrying(
    state: ApiState, run_id: str, after: int, reopen: Callable[[int], AsyncGenerator[list[Frame], None]]
) -> AsyncGenerator[list[Frame], None]:
    """The batches of ``reopen(after)``; when the store fails, reopened from the last seq sent,
    until it has failed for ``store_retry`` seconds in a row (then StoreUnavailable propagates).
    While it retries, empty batches keep an NDJSON client's connection alive."""
    cursor, delay, failing_since = after, 0.05, None
    while True:
        try:
            async with contextlib.aclosing(reopen(cursor)) as batches:
                async for batch in batches:
                    if batch:
                        cursor, delay, failing_since = batch[-1].seq, 0.05, None
                    yield batch
            return
        except StoreUnavailable as exc:
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                log.warning("events of run %s: store unreachable, retrying for %gs: %s",
                            run_id, state.settings.store_retry, exc)  # fmt: skip
            left = failing_since + state.settings.store_retry - now
            if left <= 0:
                raise
            yield []
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)


def live_frames(state: ApiState, run_id: str, after: int, fmt: str) -> AsyncGenerator[list[Frame], None]:
    idle = state.settings.keepalive if fmt == "ndjson" and state.settings.keepalive > 0 else None
    return retrying(state, run_id, after, lambda cursor: state.hub.frames(run_id, cursor, idle=idle))


def stored_frames(state: ApiState, run_id: str, after: int) -> AsyncGenerator[list[Frame], None]:
    return retrying(state, run_id, after, lambda cursor: state.hub.history(run_id, cursor))


# Reconnect storms (an API restart, a proxy cycling connections) make this the hottest route:
# its parameters are read straight from the request (FastAPI's per-parameter machinery was ~40%
# of a connection's CPU) and documented here instead.
_EVENTS_PARAMS: list[dict[str, Any]] = [
    {"name": "after", "in": "query", "required": False, "schema": {"type": "string", "pattern": "^[0-9]+$"},
     "description": "Resume after this seq (a refreshed page passes its cursor here)."},
    {"name": "follow", "in": "query", "required": False, "schema": {"type": "boolean", "default": True},
     "description": "false: only the events stored now, then close."},
    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "The API key, for EventSource (which cannot send headers). Prefer the header."},
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Sent by EventSource on its reconnects; wins over ?after=."},
]  # fmt: skip
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


@router.get(
    "/v1/runs/{run_id}/events",
    summary="Stream a run's events (SSE or NDJSON), resumable",
    response_class=Response,
    responses={**_STREAM_DOC, **errors_doc(400, 401, 404, 422, 503)},
    openapi_extra={"parameters": _EVENTS_PARAMS},
)
async def run_events(run_id: str, request: Request) -> Response:
    """History then live events, through the terminal event. ``?token=`` authenticates EventSource.

    A cursor behind the retained window yields a ``stream.gap`` event; one past the run's last
    seq is a 400. 204 when there is nothing to send: the run ended at the cursor (or, with
    ``follow=false``, nothing is stored after it). If the store stays unreachable mid-stream for
    ``store_retry`` seconds, the stream ends with an ``error`` event (NDJSON: an ``{"error"}`` line).
    """
    state: ApiState = request.app.state.outlast
    query, headers = request.query_params, request.headers
    tenant = state.auth.tenant_for(headers.get("authorization"), query.get("token"))
    last_event_id, after = headers.get("last-event-id"), query.get("after")
    if last_event_id is not None:
        cursor = parse_cursor(last_event_id.strip(), "Last-Event-ID")
    elif after is not None:
        cursor = parse_cursor(after, "after")
    else:
        cursor = 0
    follow = _BOOLEANS.get(query.get("follow", "true").lower())
    if follow is None:
        raise ApiError(
            422, "validation_error", "follow must be true or false", [{"loc": ["query", "follow"]}]
        )
    last_seq, status = await state.position(run_id, tenant)
    if cursor > last_seq:
        raise ApiError(
            400,
            "bad_cursor",
            f"cursor {cursor} is past the end of run {run_id} (last seq {last_seq})",
            {"cursor": cursor, "last_seq": last_seq},
        )
    if cursor == last_seq and (status in TERMINAL_STATUSES or not follow):
        # Nothing will ever be sent: 204 tells EventSource to stop (an empty 200 makes it
        # reconnect for ever).
        return Response(status_code=204, headers={**STREAM_HEADERS, "X-Outlast-Run-Id": run_id})
    fmt = stream_format(headers.get("accept")) or "sse"
    frames = live_frames(state, run_id, cursor, fmt) if follow else stored_frames(state, run_id, cursor)
    return stream_response(state, frames, fmt, run_id)
