"""Events a workflow or component emits while it runs: status, progress, objects, custom, log,
and a step's output chunks.

Each of the first five is recorded once per run: an emission made during replay at a position
whose event was already written by an earlier attempt is skipped. Outside a run these calls do
nothing, so components stay plain functions in unit tests.
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from outlast import events as ev
from outlast import serde
from outlast.core.context import Frame, current_frame
from outlast.store.base import OP_META, OP_OBJECT, OP_STEP, Op


def _emit(frame: Frame, type: str, data: dict[str, Any], ops: tuple[Op, ...] = ()) -> None:
    marker = frame.next_emission()
    ctx = frame.ctx
    if marker in ctx.emitted:
        return
    ctx.emitted.add(marker)
    ctx.writer.event(type, frame.step_id, data, ((OP_STEP, marker, "1"), *ops))


def status(message: str, **data: Any) -> None:
    """A human-readable status line ("researching…"); the latest is kept on the run."""
    frame = current_frame.get()
    if frame is None:
        return
    message = str(message)  # a non-str message must not break the writer
    masked = frame.ctx.secrets.mask(message)
    _emit(frame, ev.STATUS, {"message": message, **serde.to_jsonable(data, "status data")},
          ((OP_META, "status_message", masked),))  # fmt: skip


def progress(done: float, total: float | None = None, label: str | None = None) -> None:
    """Progress of the run or the current step; the latest is kept on the run."""
    frame = current_frame.get()
    if frame is None:
        return
    data = {"done": done, "total": total, "label": label}
    _emit(frame, ev.PROGRESS, data, ((OP_META, "progress", serde.dumps(frame.ctx.secrets.mask(data))),))


def publish(name: str, value: Any) -> None:
    """Set a named object's state. Clients get RFC 6902 patches (the first one sets it whole)."""
    frame = current_frame.get()
    if frame is None:
        return
    ctx = frame.ctx
    new = frame.ctx.secrets.mask(serde.to_jsonable(value, f"object {name!r}"))
    marker_frame_seen = frame.next_emission()
    if marker_frame_seen in ctx.emitted:
        # Already published by an earlier attempt. Leave the base alone: it was loaded from the
        # store and is what clients hold, so the next new patch applies cleanly to their copy.
        return
    ctx.emitted.add(marker_frame_seen)
    if name in ctx.objects:
        patch = jsonpatch.make_patch(ctx.objects[name], new).patch
        if not patch:
            return
    else:
        patch = [{"op": "replace", "path": "", "value": new}]
    ctx.objects[name] = new
    ctx.writer.event(
        ev.OBJECT,
        frame.step_id,
        {"name": name, "patch": patch},
        ((OP_STEP, marker_frame_seen, "1"), (OP_OBJECT, name, serde.dumps(new))),
    )


def emit(name: str, data: Any = None) -> None:
    """A custom, app-specific event (type ``custom``) carrying ``name`` and ``data``."""
    frame = current_frame.get()
    if frame is None:
        return
    _emit(frame, ev.CUSTOM, {"name": name, "data": serde.to_jsonable(data, f"custom event {name!r}")})


def log(message: str, level: str = "info", **data: Any) -> None:
    """A log line in the run's stream."""
    frame = current_frame.get()
    if frame is None:
        return
    _emit(
        frame, ev.LOG, {"level": str(level), "message": str(message), **serde.to_jsonable(data, "log data")}
    )


def output(chunk: Any) -> None:
    """Stream a chunk of the current step's output, like a streaming component's yield.

    It goes out in an ``output`` frame of the step's current try (text chunks are batched), so
    clients drop a failed try's partial output when the next try's chunks arrive. Not replay-
    deduplicated: a step that runs again emits again. Does nothing outside a step of a run.
    """
    frame = current_frame.get()
    if frame is None or frame.step_id is None:
        return
    frame.ctx.writer.output(frame.step_id, chunk, frame.tries)
