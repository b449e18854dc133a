"""The state of one executing run attempt, and where in the step tree the code is.

A :class:`Frame` is the current position: the workflow body is the root frame, each running
component gets a child frame. Frames hand out call indexes when a call is *made*, which is
what makes step identity deterministic (and ``gather`` order stable). The current frame lives
in a context variable, so tasks created inside a step inherit it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outlast.masking import Secrets

if TYPE_CHECKING:
    from outlast.core.waitset import WaitSet
    from outlast.core.writer import EventWriter


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A completed step as stored in the ``steps`` hash (JSON, schema version ``v``)."""

    name: str
    step_id: str
    args_hash: str
    result: Any
    fallback: bool = False
    #: False for a wait settled while an attempt ran: that attempt still owes its event.
    announced: bool = True


@dataclass
class RunContext:
    run_id: str
    attempt: int
    workflow: str
    writer: EventWriter
    checkpoints: dict[str, Checkpoint]
    emitted: set[str]
    objects: dict[str, Any]
    lenient_replay: bool = False
    secrets: Secrets = field(default_factory=Secrets)
    replayed_steps: int = 0
    version: str = "dev"
    tenant: str = ""
    waits: WaitSet | None = None


class Frame:
    """A position in the step tree: the root (workflow body) or a running step."""

    __slots__ = ("ctx", "emissions", "position", "step_id", "steps", "tries")

    def __init__(self, ctx: RunContext, step_id: str | None, position: str) -> None:
        self.ctx = ctx
        self.step_id = step_id
        self.position = position
        self.steps = 0
        self.emissions = 0
        self.tries = 0  # the step's current try (1-based, set before each); 0 at the workflow root

    def next_step(self) -> tuple[str, int]:
        index = self.steps
        self.steps += 1
        position = f"{self.position}/{index}" if self.position else str(index)
        return position, index

    def next_emission(self) -> str:
        """Key of the next status/progress/object/custom/log emission made from this frame.

        Emissions count separately from steps, so adding a ``status()`` line to a workflow
        does not shift the positions of its steps.
        """
        index = self.emissions
        self.emissions += 1
        return f"e:{self.position}:{index}"


current_frame: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("outlast_frame", default=None)


def active_frame() -> Frame | None:
    return current_frame.get()
