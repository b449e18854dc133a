"""What every UI-protocol adapter shares: a run's event stream folded into *segments* and *steps*.

An adapter is a pure function of the run's log: a :class:`Translator` reads envelopes in seq
order and returns, for each, the frames of its own protocol. Its only state is what it has read,
so a stream that resumes after seq N first feeds events 1..N to a fresh translator (discarding
what it returns) and then continues exactly where an uninterrupted stream would have been.

A *segment* is the text that one try of one step of one attempt streamed: it opens with that
try's first text ``output`` frame and closes when the step ends (``step.completed``), or is
**abandoned** when that output cannot be the step's real output (docs/protocol.md §6):

=============  =================================================================================
reason         when
=============  =================================================================================
``retry``      ``step.retrying`` of the step or an ancestor, or ``run.retrying`` (rule 2)
``attempt``    ``run.started`` of a new attempt while the segment is open (rule 1)
``fallback``   ``step.completed`` with ``fallback: true``: the result is the fallback's value
``failed``     ``step.failed``, or a ``run.failed`` while the segment is open
``cancelled``  ``step.failed`` with ``cancelled: true``, or ``run.cancelled``
=============  =================================================================================

A segment's id is ``<step>@<attempt>.<try>`` (``write#1@2.1``), with ``~<n>`` appended in the
rare case the same id would open twice in one stream (a workflow body retried in one attempt).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import jsonpatch

from outlast import events as ev

T = TypeVar("T")

AbandonReason = Literal["retry", "attempt", "fallback", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One try's streamed text of one step in one attempt."""

    id: str
    step: str
    attempt: int
    try_: int

    def meta(self) -> dict[str, Any]:
        return {"id": self.id, "step": self.step, "attempt": self.attempt, "try": self.try_}


def error_text(error: Any) -> str:
    """``Type: message`` of a stored error object."""
    error = error if isinstance(error, dict) else {}
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _descends(step: str, ancestor: str) -> bool:
    return step == ancestor or step.startswith(ancestor + "/")


class Translator(ABC, Generic[T]):
    """Folds envelopes into segment and step transitions; subclasses render them as frames."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.workflow: str | None = None
        self.attempt = 0
        self.objects: dict[str, Any] = {}
        self.open_steps: list[str] = []  # started, not ended: in start order
        self.segments: dict[str, Segment] = {}  # step id → its open segment
        self._used: dict[str, int] = {}
        self._out: list[T] = []
        self.ended = False  # the terminal event was read

    # -- the fold ------------------------------------------------------------------------------

    def translate(self, envelope: dict[str, Any]) -> list[T]:
        """The frames for one event (possibly none). Events must come in seq order."""
        self._out = []
        kind: str = envelope["type"]
        data: dict[str, Any] = envelope.get("data") or {}
        step: str | None = envelope.get("step")
        if kind == ev.OUTPUT and step is not None:
            self._output(envelope, step, data)
        elif kind == ev.STEP_STARTED and step is not None:
            if step in self.open_steps:  # defensive: a step is started once per attempt
                self._end_step(step, envelope)
            self.open_steps.append(step)
            self.step_started(step, envelope)
        elif kind == ev.STEP_COMPLETED and step is not None:
            self._close_tree(step, "fallback" if data.get("fallback") else None, envelope, descendants=False)
            self._end_step(step, envelope)
        elif kind == ev.STEP_FAILED and step is not None:
            reason: AbandonReason = "cancelled" if data.get("cancelled") else "failed"
            self._close_tree(step, reason, envelope, descendants=False)
            self._end_step(step, envelope)
        elif kind == ev.STEP_RETRYING and step is not None:
            self._close_tree(step, "retry", envelope, descendants=True)
            for other in [s for s in self.open_steps if s != step and _descends(s, step)]:
                self._end_step(other, envelope)
            self.other(envelope)
        elif kind == ev.RUN_STARTED:
            if self.attempt:  # a later attempt: what the previous one left open is void
                self._abandon_all("attempt", envelope)
            self.attempt = int(envelope.get("attempt") or data.get("attempt") or 0)
            self.run_started(envelope)
        elif kind == ev.RUN_RETRYING:
            self._abandon_all("retry", envelope)
            self.other(envelope)
        elif kind == ev.OBJECT:
            name = str(data.get("name"))
            value = jsonpatch.apply_patch(self.objects.get(name), data.get("patch") or [])
            self.objects[name] = value
            self.object(name, data.get("patch") or [], value, envelope)
        elif kind == ev.RUN_QUEUED:
            self.workflow = data.get("workflow")
            self.run_queued(envelope)
        elif kind in ev.TERMINAL_TYPES:
            reason = "cancelled" if kind == ev.RUN_CANCELLED else "failed"
            self._abandon_all(reason, envelope)
            self.ended = True
            self.terminal(envelope)
        else:
            self.other(envelope)
        return self._out

    def emit(self, frame: T) -> None:
        self._out.append(frame)

    def _output(self, envelope: dict[str, Any], step: str, data: dict[str, Any]) -> None:
        attempt, try_ = int(envelope.get("attempt") or 0), int(data.get("try") or 1)
        if "text" not in data:
            self.items(step, attempt, try_, data.get("items") or [], envelope)
            return
        segment = self.segments.get(step)
        if segment is not None and (segment.attempt, segment.try_) != (attempt, try_):
            self._close(segment, "retry", envelope)  # a try we never saw end: it cannot be live
            segment = None
        if segment is None:
            base = f"{step}@{attempt}.{try_}"
            n = self._used.get(base, 0)
            self._used[base] = n + 1
            segment = Segment(base if n == 0 else f"{base}~{n}", step, attempt, try_)
            self.segments[step] = segment
            self.text_start(segment, envelope)
        self.text_delta(segment, str(data["text"]), envelope)

    def _close(self, segment: Segment, reason: AbandonReason | None, envelope: dict[str, Any]) -> None:
        del self.segments[segment.step]
        self.text_end(segment, reason, envelope)

    def _close_tree(
        self, step: str, reason: AbandonReason | None, envelope: dict[str, Any], *, descendants: bool
    ) -> None:
        for segment in list(self.segments.values()):
            if segment.step == step:
                self._close(segment, reason, envelope)
            elif descendants and _descends(segment.step, step):
                self._close(segment, reason or "retry", envelope)

    def _end_step(self, step: str, envelope: dict[str, Any]) -> None:
        if step in self.open_steps:
            self.open_steps.remove(step)
            self.step_finished(step, envelope)

    def _abandon_all(self, reason: AbandonReason, envelope: dict[str, Any]) -> None:
        for segment in list(self.segments.values()):
            self._close(segment, reason, envelope)
        for step in reversed(self.open_steps[:]):  # innermost first
            self._end_step(step, envelope)

    # -- rendering: one hook per transition -----------------------------------------------------

    @abstractmethod
    def dump(self, frame: T) -> bytes:
        """One frame as the JSON of an SSE ``data:`` line."""

    @abstractmethod
    def run_queued(self, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def run_started(self, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def step_started(self, step: str, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def step_finished(self, step: str, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def text_start(self, segment: Segment, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def text_delta(self, segment: Segment, text: str, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def text_end(self, segment: Segment, abandoned: AbandonReason | None, envelope: dict[str, Any]) -> None:
        """``abandoned`` is None for a segment that ended with its step's completion."""

    @abstractmethod
    def items(self, step: str, attempt: int, try_: int, items: list[Any], envelope: dict[str, Any]) -> None:
        """Non-text output chunks of one frame."""

    @abstractmethod
    def object(self, name: str, patch: list[Any], value: Any, envelope: dict[str, Any]) -> None: ...

    @abstractmethod
    def terminal(self, envelope: dict[str, Any]) -> None:
        """The run ended; every segment and step is closed already."""

    @abstractmethod
    def other(self, envelope: dict[str, Any]) -> None:
        """Every remaining event: status, progress, log, custom, waits, retries, gaps."""
