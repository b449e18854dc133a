"""Event streams over HTTP: SSE (default) or NDJSON, resumable from any seq.

SSE frames are ``id: <seq>`` / ``event: <type>`` / ``data: <envelope JSON>``; the stream opens
with a ``retry:`` hint, sends a keep-alive comment when idle, and closes after the terminal
event. NDJSON sends one envelope per line and a blank line as keep-alive. Neither is compressed
(no compression middleware is installed: gzip would buffer frames), and both carry
``X-Accel-Buffering: no`` and ``Cache-Control: no-store`` so proxies pass frames through at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from outlast.api.errors import ApiError
from outlast.api.hub import Frame
from outlast.api.schemas import errors_doc
from outlast.api.state import ApiState, StateDep, StreamTenantDep
from outlast.errors import OutlastError

log = logging.getLogger("outlast.api")

router = APIRouter()

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run's events: SSE by default, NDJSON with Accept: application/x-ndjson.",
        "content": {SSE: {"schema": {"type": "string"}}, NDJSON: {"schema": {"type": "string"}}},
    }
}


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
    frames: AsyncGenerator[Frame | None, None],
    fmt: str,
    run_id: str,
    status_code: int = 200,
) -> Response:
    """Serve ``frames`` as SSE or NDJSON; the iterator is closed when the client goes away."""
    headers = {**STREAM_HEADERS, "X-Outlast-Run-Id": run_id}
    settings = state.settings
    if fmt == "sse":
        return EventSourceResponse(
            _encode(state, frames, "sse"),
            status_code=status_code,
            headers=headers,
            ping=settings.keepalive,
            sep="\n",
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
            send_timeout=settings.send_timeout,  # a half-open client cannot hold the stream forever
        )
    return StreamingResponse(
        _encode(state, frames, "ndjson"), status_code=status_code, headers=headers, media_type=NDJSON
    )


async def _encode(
    state: ApiState, frames: AsyncGenerator[Frame | None, None], fmt: str
) -> AsyncIterator[bytes]:
    metrics = state.metrics
    served = metrics.events_served.labels(fmt)
    active = metrics.streams_active.labels(fmt)
    active.inc()
    try:
        async with contextlib.aclosing(frames):
            if fmt == "sse":
                yield b"retry: %d\n\n" % state.settings.retry_ms
            async for frame in frames:
                if frame is None:
                    yield b"\n"  # NDJSON keep-alive: clients skip blank lines
                    continue
                yield frame.sse if fmt == "sse" else frame.ndjson
                served.inc()
    except OutlastError as exc:
        # Headers are sent: the only honest signal left is to end the stream; the client resumes.
        log.warning("event stream ended early: %s", exc)
    finally:
        active.dec()


def live_frames(state: ApiState, run_id: str, after: int, fmt: str) -> AsyncGenerator[Frame | None, None]:
    idle = state.settings.keepalive if fmt == "ndjson" and state.settings.keepalive > 0 else None
    return state.hub.frames(run_id, after, idle=idle)


@router.get(
    "/v1/runs/{run_id}/events",
    summary="Stream a run's events (SSE or NDJSON), resumable",
    response_class=Response,
    responses={**_STREAM_DOC, **errors_doc(400, 401, 404, 422, 503)},
)
async def run_events(
    run_id: str,
    request: Request,
    state: StateDep,
    tenant: StreamTenantDep,
    after: Annotated[
        str | None, Query(description="Resume after this seq (a refreshed page passes its cursor here).")
    ] = None,
    follow: Annotated[bool, Query(description="false: only the events stored now, then close.")] = True,
    last_event_id: Annotated[
        str | None, Header(description="Sent by EventSource on reconnect; wins over ?after=.")
    ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """History then live events, through the terminal event. ``?token=`` authenticates EventSource.

    A cursor behind the retained window yields a ``stream.gap`` event; one past the run's last
    seq is a 400.
    """
    if last_event_id is not None:
        cursor = parse_cursor(last_event_id.strip(), "Last-Event-ID")
    elif after is not None:
        cursor = parse_cursor(after, "after")
    else:
        cursor = 0
    record = await state.get_run(run_id, tenant)
    if cursor > record.last_seq:
        raise ApiError(
            400,
            "bad_cursor",
            f"cursor {cursor} is past the end of run {run_id} (last seq {record.last_seq})",
            {"cursor": cursor, "last_seq": record.last_seq},
        )
    fmt = stream_format(accept) or "sse"
    frames = live_frames(state, run_id, cursor, fmt) if follow else state.hub.history(run_id, cursor)
    return stream_response(state, frames, fmt, run_id)
