"""The event protocol: the envelope and the event types (see docs/protocol.md).

Every event of a run is one JSON envelope
``{"v", "seq", "type", "run_id", "attempt", "step", "ts", "data"}`` in the run's stream,
stored under stream id ``0-<seq>``. ``seq`` is contiguous from 1.
"""

from __future__ import annotations

from typing import Any, Final

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
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})


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
