"""The span tree of a run, derived from its event log.

Every step's lifecycle events carry what a trace needs (name, parent, masked arguments,
result, tries, errors, fallback), so the tree is rebuilt from the stream for any run, by any
process, with no separate trace store. Secrets were masked before the events were written.
Waits of the workflow body (input, sleep, child runs) are spans too, from their request to
their settlement, so a trace shows where a run spent hours waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from outlast import events as ev
from outlast.store.base import RunStore


class Span(BaseModel):
    step_id: str
    name: str
    parent: str | None
    position: str
    #: ``step`` (a component call), or a wait of the workflow body: ``input``, ``sleep``, ``child``
    #: (waiting for a child run) or ``child_start``.
    kind: str = "step"
    args: dict[str, Any] = {}
    status: str = "running"  # running | completed | failed | cancelled; waits: waiting | timed_out
    result: Any = None
    error: dict[str, Any] | None = None
    fallback: bool = False
    tries: int = 1
    retries: list[dict[str, Any]] = []
    attempt: int = 0
    started_at: float
    ended_at: float | None = None
    #: An LLM step's ``{tokens_in, tokens_out, cost}`` (from its step.completed).
    usage: dict[str, Any] | None = None
    children: list[Span] = []


class AttemptInfo(BaseModel):
    """One attempt of a run: the worker that executed it, and why it ended.

    ``outcome``: ``running`` (the current one), ``waiting`` (it suspended on a wait; the next
    attempt resumes), ``lost`` (its worker stopped renewing the lease: another took the run
    over), ``completed``, ``failed``, ``cancelled``.
    """

    attempt: int
    worker: str | None = None
    started_at: float
    ended_at: float | None = None
    outcome: str = "running"
    reason: str | None = None


def build_attempts(events: Iterable[ev.Event]) -> list[AttemptInfo]:
    """The run's attempts in order, from its ``run.started``, ``run.waiting`` and terminal events."""
    attempts: list[AttemptInfo] = []
    for event in events:
        current = attempts[-1] if attempts else None
        if event.type == ev.RUN_STARTED:
            if current is not None and current.outcome == "running":
                current.outcome, current.ended_at = "lost", event.ts
                current.reason = "its lease expired: another worker took the run over"
            worker = str(event.data.get("worker") or "") or None
            attempts.append(AttemptInfo(attempt=event.attempt, worker=worker, started_at=event.ts))
        elif current is not None and event.type == ev.RUN_WAITING:
            current.outcome, current.ended_at = "waiting", event.ts
            current.reason = "suspended until its waits settle"
        elif event.type in _ENDINGS:
            outcome = _ENDINGS[event.type]
            reason = event.data.get("reason")
            if current is None or current.outcome != "running":  # ended with no attempt running
                current = AttemptInfo(attempt=event.attempt, started_at=event.ts)
                attempts.append(current)
            current.outcome, current.ended_at = outcome, event.ts
            current.reason = str(reason) if reason else None
    return attempts


_ENDINGS = {ev.RUN_COMPLETED: "completed", ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}


def build_trace(events: Iterable[ev.Event]) -> list[Span]:
    """Root spans (top-level steps) with their children, in call order.

    A step re-run by a later attempt (it had not completed) keeps only its latest attempt.
    """
    spans: dict[str, Span] = {}
    for event in events:
        step = event.step
        if step is None:
            continue
        data = event.data
        if event.type == ev.STEP_STARTED:
            spans[step] = Span(
                step_id=step,
                name=data.get("name", step),
                parent=data.get("parent"),
                position=data.get("position", ""),
                args=data.get("args", {}),
                attempt=event.attempt,
                started_at=event.ts,
            )
            continue
        if event.type in _WAIT_OPENERS:
            kind, name_of = _WAIT_OPENERS[event.type]
            spans[step] = Span(
                step_id=step, name=name_of(data, step), parent=None, kind=kind,
                position=step.rpartition("#")[2], args=data, attempt=event.attempt, started_at=event.ts,
                status="completed" if kind == "child_start" else "waiting",
                ended_at=event.ts if kind == "child_start" else None,
            )  # fmt: skip
            continue
        span = spans.get(step)
        if span is None:
            continue
        if event.type in (ev.INPUT_RECEIVED, ev.SLEEP_ENDED, ev.CHILD_COMPLETED, ev.INPUT_TIMEOUT):
            span.ended_at = event.ts
            span.status = "completed"
            if event.type == ev.INPUT_RECEIVED:
                span.result = data.get("value")
            elif event.type == ev.INPUT_TIMEOUT:
                span.status = "timed_out"
            elif event.type == ev.CHILD_COMPLETED:
                span.result = {"child_run_id": data.get("child_run_id"), "status": data.get("status")}
                if data.get("status") != "completed":
                    span.status = "failed"
        elif event.type == ev.STEP_RETRYING:
            span.retries.append(
                {"try": data.get("try"), "error": data.get("error"), "delay": data.get("delay")}
            )
        elif event.type == ev.STEP_COMPLETED:
            span.status = "completed"
            span.result = data.get("result")
            span.tries = int(data.get("tries", 1))
            span.fallback = bool(data.get("fallback", False))
            span.error = data.get("error")
            span.ended_at = event.ts
            span.usage = data.get("usage")
        elif event.type == ev.STEP_FAILED:
            span.status = "cancelled" if data.get("cancelled") else "failed"
            span.error = data.get("error")
            span.tries = int(data.get("tries", 1))
            span.ended_at = event.ts
    roots: list[Span] = []
    for span in spans.values():
        parent = spans.get(span.parent) if span.parent else None
        (parent.children if parent is not None else roots).append(span)
    key = _position_key
    roots.sort(key=key)
    for span in spans.values():
        span.children.sort(key=key)
    return roots


#: The event that opens a wait's span: (kind, its name from the event's data and step id).
_WAIT_OPENERS: dict[str, tuple[str, Any]] = {
    ev.INPUT_REQUESTED: ("input", lambda data, step: f"input:{data.get('key')}"),
    ev.SLEEP_STARTED: ("sleep", lambda data, step: "sleep"),
    ev.CHILD_WAITING: ("child", lambda data, step: f"child:{data.get('workflow')}"),
    ev.CHILD_STARTED: ("child_start", lambda data, step: f"start:{data.get('workflow')}"),
}


def _position_key(span: Span) -> tuple[int, ...]:
    return tuple(int(part) for part in span.position.split("/") if part.isdigit())


async def load_trace(store: RunStore, run_id: str) -> list[Span]:
    """The span tree of a run, read from the store."""
    return build_trace([event async for event in store.read_events(run_id, follow=False)])


async def load_history(store: RunStore, run_id: str) -> tuple[list[Span], list[AttemptInfo]]:
    """The span tree and the attempts of a run, from one read of its events."""
    events = [event async for event in store.read_events(run_id, follow=False)]
    return build_trace(events), build_attempts(events)
