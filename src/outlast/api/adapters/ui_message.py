"""A run's events as the Vercel AI SDK's UI message stream (protocol v1): one assistant message.

The mapping (docs/protocol.md §18.3 has the full table):

* ``run.queued`` → ``start`` (``messageId`` = the run id) and ``data-outlast-run``.
* ``step.started`` → ``start-step``; the step's end → ``finish-step``. The AI SDK forgets every
  open text part on ``finish-step``, so one is only sent once no text part is open (a step that
  ends while a concurrent step still streams has its ``finish-step`` sent when that one closes).
* text ``output`` → ``text-start`` / ``text-delta`` / ``text-end`` per segment (one try of one step
  in one attempt, id ``<step>@<attempt>.<try>``). Each ``text-start`` carries
  ``providerMetadata.outlast = {id, step, attempt, try}``.
* An abandoned segment (a failed try or attempt, see :mod:`.translate`) ends with a ``text-end``
  whose ``providerMetadata.outlast.abandoned`` is the reason (the UI part keeps it), followed by a
  ``data-outlast-abandoned`` part. A UI drops or greys such text; the retry's text is a new part.
* status, progress, objects, waits, custom events and logs → typed ``data-outlast-*`` parts;
  the terminal event → ``data-outlast-run``, then ``error`` (failed) or ``abort`` (cancelled),
  then ``finish``; the encoder then sends ``data: [DONE]``.
"""

from __future__ import annotations

import json
from typing import Any

from outlast import events as ev
from outlast.api.adapters.translate import AbandonReason, Segment, Translator, error_text

HEADER = "x-vercel-ai-ui-message-stream"
VERSION = "v1"
DONE = b"data: [DONE]\n\n"

Part = dict[str, Any]

_WAIT_STATES = {
    ev.INPUT_REQUESTED: ("input", "requested"),
    ev.INPUT_RECEIVED: ("input", "received"),
    ev.INPUT_TIMEOUT: ("input", "timeout"),
    ev.SLEEP_STARTED: ("sleep", "started"),
    ev.SLEEP_ENDED: ("sleep", "ended"),
    ev.CHILD_STARTED: ("child", "started"),
    ev.CHILD_WAITING: ("child", "waiting"),
    ev.CHILD_COMPLETED: ("child", "completed"),
}
_RUN_STATUS = {ev.RUN_COMPLETED: "completed", ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}


def _data(name: str, data: dict[str, Any], part_id: str | None = None, *, transient: bool = False) -> Part:
    part: Part = {"type": f"data-outlast-{name}"}
    if part_id is not None:
        part["id"] = part_id  # the AI SDK replaces the part with the same type and id
    part["data"] = data
    if transient:
        part["transient"] = True  # passed to onData, never stored in the message
    return part


def _scoped(name: str, step: str | None) -> str:
    return name if step is None else f"{name}:{step}"


class UIMessageTranslator(Translator[Part]):
    """Envelopes → UI message stream parts (JSON objects), one run = one assistant message."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self._pending_finish = 0  # finish-steps held back while a text part is open

    def dump(self, frame: Part) -> bytes:
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()

    def _run_part(self, status: str, **extra: Any) -> None:
        data = {"run_id": self.run_id, "workflow": self.workflow, "status": status, "attempt": self.attempt}
        self.emit(_data("run", {**data, **extra}, "run"))

    # -- lifecycle ---------------------------------------------------------------------------

    def run_queued(self, envelope: dict[str, Any]) -> None:
        self.emit({"type": "start", "messageId": self.run_id})
        self._run_part("queued")

    def run_started(self, envelope: dict[str, Any]) -> None:
        self._run_part("running")

    def step_started(self, step: str, envelope: dict[str, Any]) -> None:
        self.emit({"type": "start-step"})

    def step_finished(self, step: str, envelope: dict[str, Any]) -> None:
        if self.segments:
            self._pending_finish += 1
        else:
            self.emit({"type": "finish-step"})

    def terminal(self, envelope: dict[str, Any]) -> None:
        kind, data = envelope["type"], envelope.get("data") or {}
        self._flush_finish()
        if kind == ev.RUN_COMPLETED:
            self._run_part("completed", result=data.get("result"))
            self.emit({"type": "finish", "finishReason": "stop"})
        elif kind == ev.RUN_FAILED:
            error = data.get("error") or {}
            self._run_part("failed", error=error)
            self.emit({"type": "error", "errorText": error_text(error)})
            self.emit({"type": "finish", "finishReason": "error"})
        else:
            self._run_part(_RUN_STATUS[kind], reason=data.get("reason"))
            self.emit({"type": "abort", "reason": str(data.get("reason") or "cancelled")})
            self.emit({"type": "finish", "finishReason": "other"})

    # -- text ---------------------------------------------------------------------------------

    def text_start(self, segment: Segment, envelope: dict[str, Any]) -> None:
        self.emit({"type": "text-start", "id": segment.id, "providerMetadata": {"outlast": segment.meta()}})

    def text_delta(self, segment: Segment, text: str, envelope: dict[str, Any]) -> None:
        self.emit({"type": "text-delta", "id": segment.id, "delta": text})

    def text_end(self, segment: Segment, abandoned: AbandonReason | None, envelope: dict[str, Any]) -> None:
        if abandoned is None:
            self.emit({"type": "text-end", "id": segment.id})
        else:
            meta = {**segment.meta(), "abandoned": abandoned}
            self.emit({"type": "text-end", "id": segment.id, "providerMetadata": {"outlast": meta}})
            self.emit(_data("abandoned", {**segment.meta(), "reason": abandoned}, segment.id))
        if not self.segments:
            self._flush_finish()

    def _flush_finish(self) -> None:
        for _ in range(self._pending_finish):
            self.emit({"type": "finish-step"})
        self._pending_finish = 0

    # -- data parts ---------------------------------------------------------------------------

    def items(self, step: str, attempt: int, try_: int, items: list[Any], envelope: dict[str, Any]) -> None:
        self.emit(_data("output", {"step": step, "attempt": attempt, "try": try_, "items": items}))

    def object(self, name: str, patch: list[Any], value: Any, envelope: dict[str, Any]) -> None:
        self.emit(_data("object", {"name": name, "value": value, "step": envelope.get("step")}, name))

    def other(self, envelope: dict[str, Any]) -> None:
        kind, step = envelope["type"], envelope.get("step")
        data: dict[str, Any] = envelope.get("data") or {}
        if kind == ev.STATUS:
            self.emit(_data("status", {**data, "step": step}, _scoped("status", step)))
        elif kind == ev.PROGRESS:
            self.emit(_data("progress", {**data, "step": step}, _scoped("progress", step)))
        elif kind == ev.CUSTOM:
            self.emit(_data("custom", {"name": data.get("name"), "data": data.get("data"), "step": step}))
        elif kind == ev.LOG:
            self.emit(_data("log", {**data, "step": step}, transient=True))
        elif kind in _WAIT_STATES and step is not None:
            wait_kind, state = _WAIT_STATES[kind]
            self.emit(_data("wait", {"kind": wait_kind, "state": state, "step": step, **data}, step))
        elif kind == ev.RUN_WAITING:
            self._run_part("waiting", waits=data.get("waits") or [])
        elif kind in (ev.STEP_RETRYING, ev.RUN_RETRYING):
            self.emit(_data("retry", {"step": step, **data}, transient=True))
        elif kind == ev.STREAM_GAP:
            self.emit(_data("gap", {"from": data.get("from"), "to": data.get("to")}))
