"""A run's events as an AG-UI event stream, built from the ``ag-ui-protocol`` package's models.

The mapping (docs/protocol.md §18.4 has the full table):

* ``run.queued`` → ``RUN_STARTED`` (the client's ``threadId``/``runId``; the Outlast run id in
  ``metadata.outlast.run_id``).
* ``step.started`` / the step's end → ``STEP_STARTED`` / ``STEP_FINISHED`` (``stepName`` = step id).
* text ``output`` → ``TEXT_MESSAGE_START`` / ``CONTENT`` / ``END`` per segment (message id
  ``<run_id>/<step>@<attempt>.<try>``, role ``assistant``). An abandoned segment's
  ``TEXT_MESSAGE_END`` is followed by ``CUSTOM outlast.abandoned`` naming it and the reason.
* published objects → ``STATE_DELTA``: the object's RFC 6902 patch with every path moved under
  ``/<name>``, so the agent state is ``{name: value, …}``. A stream that resumes from a cursor
  opens with a ``STATE_SNAPSHOT`` of every object.
* status, progress, logs, waits, retries, gaps → ``CUSTOM`` named ``outlast.<kind>``; a custom
  event → ``CUSTOM`` with the event's own name.
* ``run.completed`` → ``RUN_FINISHED`` (``result``); ``run.failed`` → ``RUN_ERROR``
  (``code`` = the reason); ``run.cancelled`` → ``RUN_ERROR`` with ``code: "cancelled"``.
"""

from __future__ import annotations

from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
)

from outlast import events as ev
from outlast.api.adapters.translate import AbandonReason, Segment, Translator, error_text

_CUSTOM_NAMES = {
    ev.STATUS: "outlast.status",
    ev.PROGRESS: "outlast.progress",
    ev.LOG: "outlast.log",
    ev.RUN_WAITING: "outlast.waiting",
    ev.STEP_RETRYING: "outlast.retry",
    ev.RUN_RETRYING: "outlast.retry",
    ev.STREAM_GAP: "outlast.gap",
}
_WAITS = frozenset(
    {ev.INPUT_REQUESTED, ev.INPUT_RECEIVED, ev.INPUT_TIMEOUT, ev.SLEEP_STARTED, ev.SLEEP_ENDED,
     ev.CHILD_STARTED, ev.CHILD_WAITING, ev.CHILD_COMPLETED}
)  # fmt: skip


def _pointer(name: str) -> str:
    return "/" + name.replace("~", "~0").replace("/", "~1")


def state_delta(name: str, patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An object's patch (paths relative to its value) as a patch of the state ``{name: value}``."""
    base = _pointer(name)
    moved: list[dict[str, Any]] = []
    for op in patch:
        op = dict(op)
        if op.get("path") == "" and op.get("op") == "replace":
            op["op"] = "add"  # the first publish: the key may not exist yet; add sets it either way
        op["path"] = base + str(op.get("path", ""))
        if "from" in op:
            op["from"] = base + str(op["from"])
        moved.append(op)
    return moved


class AgUiTranslator(Translator[BaseEvent]):
    """Envelopes → AG-UI events for one run, announced as ``thread_id``/``agui_run_id``."""

    def __init__(self, run_id: str, thread_id: str, agui_run_id: str) -> None:
        super().__init__(run_id)
        self.thread_id = thread_id
        self.agui_run_id = agui_run_id
        self._ended: list[BaseEvent] = []

    def dump(self, frame: BaseEvent) -> bytes:
        return frame.model_dump_json(by_alias=True).encode()

    def reattach(self) -> list[BaseEvent]:
        """What a stream resuming after the events read so far opens with, so that it is valid
        on its own: ``RUN_STARTED``, a ``STATE_SNAPSHOT`` of every object, then a
        ``STEP_STARTED`` per open step and a ``TEXT_MESSAGE_START`` per open segment (the same
        message ids: a client that kept its messages goes on appending to them)."""
        self._out = []
        if self.workflow is not None:
            self.run_queued({})
        self.emit(StateSnapshotEvent(snapshot=dict(self.objects)))
        for step in self.open_steps:
            self.step_started(step, {})
        for segment in self.segments.values():
            self.text_start(segment, {})
        self._out.extend(self._ended)  # the run ended already: say so again
        return self._out

    def _custom(self, name: str, value: Any) -> None:
        self.emit(CustomEvent(name=name, value=value))

    def run_queued(self, envelope: dict[str, Any]) -> None:
        self.emit(
            RunStartedEvent(
                thread_id=self.thread_id,
                run_id=self.agui_run_id,
                metadata={"outlast": {"run_id": self.run_id, "workflow": self.workflow}},
            )
        )

    def run_started(self, envelope: dict[str, Any]) -> None:
        self._custom("outlast.attempt", {"attempt": self.attempt, **(envelope.get("data") or {})})

    def step_started(self, step: str, envelope: dict[str, Any]) -> None:
        self.emit(StepStartedEvent(step_name=step))

    def step_finished(self, step: str, envelope: dict[str, Any]) -> None:
        self.emit(StepFinishedEvent(step_name=step))

    def _message_id(self, segment: Segment) -> str:
        return f"{self.run_id}/{segment.id}"

    def text_start(self, segment: Segment, envelope: dict[str, Any]) -> None:
        self.emit(
            TextMessageStartEvent(
                message_id=self._message_id(segment), role="assistant", metadata={"outlast": segment.meta()}
            )
        )

    def text_delta(self, segment: Segment, text: str, envelope: dict[str, Any]) -> None:
        if text:  # AG-UI rejects an empty delta
            self.emit(TextMessageContentEvent(message_id=self._message_id(segment), delta=text))

    def text_end(self, segment: Segment, abandoned: AbandonReason | None, envelope: dict[str, Any]) -> None:
        message_id = self._message_id(segment)
        self.emit(TextMessageEndEvent(message_id=message_id))
        if abandoned is not None:
            meta = {**segment.meta(), "message_id": message_id, "reason": abandoned}
            self._custom("outlast.abandoned", meta)

    def items(self, step: str, attempt: int, try_: int, items: list[Any], envelope: dict[str, Any]) -> None:
        self._custom("outlast.output", {"step": step, "attempt": attempt, "try": try_, "items": items})

    def object(self, name: str, patch: list[Any], value: Any, envelope: dict[str, Any]) -> None:
        self.emit(StateDeltaEvent(delta=state_delta(name, patch)))

    def terminal(self, envelope: dict[str, Any]) -> None:
        kind, data = envelope["type"], envelope.get("data") or {}
        if kind == ev.RUN_COMPLETED:
            self.emit(
                RunFinishedEvent(thread_id=self.thread_id, run_id=self.agui_run_id, result=data.get("result"))
            )
        elif kind == ev.RUN_FAILED:
            self.emit(
                RunErrorEvent(message=error_text(data.get("error")), code=str(data.get("reason") or "error"))
            )
        else:
            self.emit(
                RunErrorEvent(message=f"cancelled: {data.get('reason') or 'cancelled'}", code="cancelled")
            )
        self._ended = self._out[-1:]

    def other(self, envelope: dict[str, Any]) -> None:
        kind, step = envelope["type"], envelope.get("step")
        data: dict[str, Any] = envelope.get("data") or {}
        if kind == ev.CUSTOM:
            self._custom(str(data.get("name")), data.get("data"))
        elif kind in _WAITS:
            self._custom("outlast.wait", {"type": kind, "step": step, **data})
        elif kind in _CUSTOM_NAMES:
            self._custom(_CUSTOM_NAMES[kind], {**data, "step": step})
