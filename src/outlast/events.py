"""The event protocol: the envelope and the event types (see docs/protocol.md).

Every event of a run is one JSON envelope
``{"v", "seq", "type", "run_id", "attempt", "step", "ts", "data"}`` in the run's stream,
stored under stream id ``0-<seq>``. ``seq`` is contiguous from 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Final, NotRequired, Protocol, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Final = 1

RUN_QUEUED: Final = "run.queued"
RUN_STARTED: Final = "run.started"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_CANCELLED: Final = "run.cancelled"
#: The workflow body raised and its own retry policy runs it again (same attempt, replaying).
RUN_RETRYING: Final = "run.retrying"
#: The attempt suspended: every branch of the workflow waits (input, timer, child run).
RUN_WAITING: Final = "run.waiting"
INPUT_REQUESTED: Final = "input.requested"
INPUT_RECEIVED: Final = "input.received"
INPUT_TIMEOUT: Final = "input.timeout"
SLEEP_STARTED: Final = "sleep.started"
SLEEP_ENDED: Final = "sleep.ended"
CHILD_STARTED: Final = "child.started"
CHILD_WAITING: Final = "child.waiting"
CHILD_COMPLETED: Final = "child.completed"
STEP_STARTED: Final = "step.started"
STEP_RETRYING: Final = "step.retrying"
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
OUTPUT: Final = "output"
STATUS: Final = "status"
PROGRESS: Final = "progress"
OBJECT: Final = "object"
LOG: Final = "log"
CUSTOM: Final = "custom"
#: Synthesised by readers (never stored): events between two cursors were trimmed away.
STREAM_GAP: Final = "stream.gap"

TERMINAL_TYPES: Final = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})


# Statuses and reasons are StrEnums: each member *is* its string (equal, same hash, encoded as
# the bare string), so what is stored and sent stays exactly the same text.


class RunStatus(StrEnum):
    """A run's ``status`` (its meta hash, the API's ``status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # suspended: every branch waits (input, timer, child run)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class AttemptStatus(StrEnum):
    """How one attempt ended (:class:`outlast.Outcome`'s ``status``)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"  # the run waits; a later attempt resumes it
    ABANDONED = "abandoned"  # fenced off or the store failed: nothing terminal was written


class ClaimStatus(StrEnum):
    """What the CLAIM script answered a worker (see docs/compute.md)."""

    OK = "ok"  # a new attempt is ours
    ALIVE = "alive"  # someone holds a live lease
    TERMINAL = "terminal"  # the run already ended
    CANCELLED = "cancelled"  # cancellation was requested and nobody runs it
    EXHAUSTED = "exhausted"  # max_attempts attempts in a row lost their worker without progress
    UNSERVED = "unserved"  # the claimer's code lacks the run's workflow: nothing changed
    WAITING = "waiting"  # suspended until a wait is settled
    GONE = "gone"  # no such run (expired)


class Reason(StrEnum):
    """The ``reason`` of ``run.failed`` / ``run.cancelled`` and of the run's stored error."""

    ERROR = "error"  # the workflow raised
    NON_DETERMINISM = "non_determinism"  # replayed code diverged from the recorded steps
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # max_attempts losses of its worker in a row
    #: No longer written (a worker lacking the workflow leaves the run to one that has it); kept
    #: so records written before still read.
    WORKFLOW_NOT_FOUND = "workflow_not_found"
    CANCELLED = "cancelled"  # cancellation was requested


class ErrorInfo(TypedDict):
    """An error as events and run records carry it."""

    type: str  # the exception's class name
    message: str
    reason: NotRequired[Reason]  # on a run's error (run.failed, the record)
    step: NotRequired[str]  # the step a non-determinism error names
    lost_workers: NotRequired[list[str]]  # attempts_exhausted: the workers that died holding it
    losses: NotRequired[int]  # attempts_exhausted: the attempts in a row that lost their worker
    traceback: NotRequired[str]  # step.failed / run.failed of workflow code: capped, masked


class Event(BaseModel):
    """One envelope, as read back from a run's stream."""

    model_config = ConfigDict(frozen=True)

    v: int = SCHEMA_VERSION
    seq: int
    type: str
    run_id: str
    attempt: int
    step: str | None = None
    ts: float
    data: dict[str, Any] = {}

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def envelope(
    *, seq: int, type: str, run_id: str, attempt: int, step: str | None, ts: float, data: dict[str, Any]
) -> dict[str, Any]:
    """The envelope dict in protocol field order."""
    return {
        "v": SCHEMA_VERSION,
        "seq": seq,
        "type": type,
        "run_id": run_id,
        "attempt": attempt,
        "step": step,
        "ts": ts,
        "data": data,
    }


# -- the reading rule (every reader: RedisStore, MemoryStore, the API's hub) ---------------------


class Sequenced(Protocol):
    """What a reader handles: an event, or a frame of one."""

    @property
    def seq(self) -> int: ...
    @property
    def terminal(self) -> bool: ...


S = TypeVar("S", bound=Sequenced)


def gap_envelope(run_id: str, cursor: int, next_seq: int) -> dict[str, Any]:
    """The synthetic ``stream.gap`` a reader yields when seqs ``cursor+1 .. next_seq-1`` were
    trimmed away (its seq is the last missing one, so the reader's cursor moves past them)."""
    return envelope(
        seq=next_seq - 1, type=STREAM_GAP, run_id=run_id, attempt=0, step=None, ts=time.time(),
        data={"from": cursor + 1, "to": next_seq - 1},
    )  # fmt: skip


def gap_event(run_id: str, cursor: int, next_seq: int) -> Event:
    """:func:`gap_envelope` as an Event."""
    return Event.model_validate(gap_envelope(run_id, cursor, next_seq))


def contiguous(cursor: int, items: Iterable[S], gap: Callable[[int, int], S]) -> tuple[list[S], int, bool]:
    """``items`` (in seq order) after ``cursor``, with ``gap(cursor, seq)`` where seqs are missing,
    cut after the terminal one: (batch, new cursor, terminal seen)."""
    batch: list[S] = []
    for item in items:
        seq = item.seq
        if seq <= cursor:
            continue
        if seq > cursor + 1:
            batch.append(gap(cursor, seq))
        batch.append(item)
        cursor = seq
        if item.terminal:
            return batch, cursor, True
    return batch, cursor, False


def ended(status: str | None, last_seq: int, cursor: int) -> bool:
    """Nothing more will come after ``cursor``: the run's keys are gone (``status`` None), or it
    ended and its terminal event is at or before the cursor."""
    return status is None or (status in TERMINAL_STATUSES and cursor >= last_seq)
