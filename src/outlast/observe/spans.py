"""A run's trace as OpenTelemetry-shaped spans, rebuilt from its event log (no OpenTelemetry import).

Why from the log: a run's attempts may live in different processes, and the process of a lost
attempt was killed — whatever it held in memory (open spans, an exporter's queue) died with it.
The log is durable and every event carries its attempt and time, so any process can rebuild the
spans of every attempt, including the lost one, and give them the *same ids* as any other
process would: ids are derived from the run id and the span's place in the run (see
:func:`trace_id_of`), never random. The process that ends an attempt exports what is finished;
:class:`~outlast.observe.otel.SpanExporter` marks exported spans so none is sent twice.

The tree: ``run <workflow>`` (root, from ``run.queued`` to the terminal event) → ``attempt <n>``
(from its ``run.started`` to its last event) → the steps it ran (nested as called), LLM steps
named ``chat <model>`` with GenAI attributes. Waits of the workflow body (input, sleep, child)
hang under the run span: they may outlast the attempt that opened them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from outlast import events as ev

#: Span kinds as OpenTelemetry names them (INTERNAL for Outlast's own spans, CLIENT for a model call).
INTERNAL = "internal"
CLIENT = "client"

#: The event that opens a wait span, and its span name.
_WAITS = {
    ev.INPUT_REQUESTED: ("input", "key"),
    ev.SLEEP_STARTED: ("sleep", None),
    ev.CHILD_WAITING: ("child", "workflow"),
}
_WAIT_ENDS = {ev.INPUT_RECEIVED, ev.INPUT_TIMEOUT, ev.SLEEP_ENDED, ev.CHILD_COMPLETED}


def trace_id_of(run_id: str) -> int:
    """The run's 128-bit trace id: a hash of its id, the same in every process and attempt."""
    return _hash_id(f"trace:{run_id}", 16)


def span_id_of(run_id: str, key: str) -> int:
    """The 64-bit id of the span ``key`` (``run``, ``a:<n>``, ``s:<n>:<step>``, ``w:<step>``) of a run."""
    return _hash_id(f"span:{run_id}:{key}", 8)


def _hash_id(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1  # zero is OpenTelemetry's "invalid id"


@dataclass
class SpanData:
    """One span: ``key`` names it within the run (stable across processes); times in seconds."""

    key: str
    name: str
    parent: str | None  # the parent's key; None for the run span
    start: float
    end: float | None = None
    kind: str = INTERNAL
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set: the span's status is ERROR with this description
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Attempt:
    number: int
    start: float
    worker: str
    last: float
    outcome: str | None = None
    retries: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)


def build_spans(run_events: Iterable[ev.Event], *, over_through: int) -> list[SpanData]:
    """The finished spans of a run's log. Attempts up to ``over_through`` are over (a later one
    took the fence, or this process ended it): their unfinished steps end with the attempt, at
    its last event, as interrupted. An open wait ends only when settled or when the run ends."""
    run: SpanData | None = None
    attempts: dict[int, _Attempt] = {}
    spans: dict[str, SpanData] = {}
    open_steps: dict[str, str] = {}  # step id → key of its span in the attempt that runs it
    for event in run_events:
        data, step, attempt = event.data, event.step, event.attempt
        if attempt in attempts:
            attempts[attempt].last = event.ts
        if event.type == ev.RUN_QUEUED:
            run = SpanData("run", f"run {data.get('workflow', '')}", None, event.ts)
            run.attributes.update({"outlast.workflow": data.get("workflow", ""),
                                   "outlast.version": data.get("version", "")})  # fmt: skip
        elif event.type == ev.RUN_STARTED:
            attempts[attempt] = _Attempt(attempt, event.ts, str(data.get("worker") or ""), event.ts)
        elif event.type == ev.RUN_RETRYING and attempt in attempts:
            attempts[attempt].retries.append(("run.retrying", event.ts, {"outlast.try": data.get("try", 0)}))
        elif event.type == ev.RUN_WAITING and attempt in attempts:
            attempts[attempt].outcome = "suspended"
        elif event.terminal:
            if attempt in attempts:
                attempts[attempt].outcome = event.type.removeprefix("run.")
            if run is not None:
                run.end = event.ts
                run.attributes["outlast.status"] = event.type.removeprefix("run.")
                run.attributes["outlast.attempts"] = max(attempts, default=0)
                if event.type == ev.RUN_FAILED:
                    run.error = _message(data.get("error"))
        elif step is not None:
            _step_event(event, spans, open_steps)
    for each in attempts.values():
        if each.number <= over_through and each.outcome is None:
            each.outcome = "interrupted"  # its worker was lost, drained, or fenced off
    out: list[SpanData] = []
    if run is not None and run.end is not None:
        out.append(run)
    for each in attempts.values():
        if each.outcome is None:
            continue  # still running elsewhere (or here): exported when it ends
        span = SpanData(f"a:{each.number}", f"attempt {each.number}", "run", each.start, each.last)
        span.attributes.update({"outlast.attempt": each.number, "outlast.worker": each.worker,
                                "outlast.attempt.outcome": each.outcome})  # fmt: skip
        if each.outcome in ("failed", "interrupted"):
            span.error = f"attempt {each.outcome}"
        span.events = each.retries
        out.append(span)
    for key, span in spans.items():
        if key.startswith("w:"):
            if span.end is None and run is not None and run.end is not None:
                span.end, span.error = run.end, "the run ended first"
        elif span.end is None:
            owner = attempts.get(int(key.split(":", 2)[1]))
            if owner is None or owner.outcome is None:
                continue
            span.end, span.error = owner.last, f"attempt {owner.outcome}"
        if span.end is not None:
            out.append(span)
    return out


def _step_event(event: ev.Event, spans: dict[str, SpanData], open_steps: dict[str, str]) -> None:
    data, step, attempt = event.data, event.step or "", event.attempt
    if event.type == ev.STEP_STARTED:
        parent = open_steps.get(str(data.get("parent"))) if data.get("parent") else None
        key = f"s:{attempt}:{step}"
        span = SpanData(key, str(data.get("name", step)), parent or f"a:{attempt}", event.ts)
        span.attributes.update({"outlast.step": step, "outlast.position": str(data.get("position", ""))})
        spans[key] = span
        open_steps[step] = key
        return
    if event.type in _WAITS:
        kind, field_name = _WAITS[event.type]
        name = f"{kind}:{data.get(field_name)}" if field_name else kind
        span = SpanData(f"w:{step}", name, "run", event.ts)
        span.attributes.update({"outlast.wait": kind, "outlast.step": step})
        spans[span.key] = span
        return
    if event.type in _WAIT_ENDS:
        wait = spans.get(f"w:{step}")
        if wait is not None and wait.end is None:
            wait.end = event.ts
            if event.type == ev.INPUT_TIMEOUT:
                wait.error = "timed out"
            elif event.type == ev.CHILD_COMPLETED and data.get("status") != "completed":
                wait.error = f"child {data.get('status')}"
        return
    found = spans.get(open_steps.get(step, ""))
    if found is None or found.end is not None:
        return
    span = found
    if event.type == ev.STEP_RETRYING:
        error = data.get("error") or {}
        span.events.append(("step.retrying", event.ts, {"outlast.try": data.get("try", 0),
                            "exception.type": str(error.get("type", "")),
                            "exception.message": str(error.get("message", ""))}))  # fmt: skip
    elif event.type in (ev.STEP_COMPLETED, ev.STEP_FAILED):
        span.end = event.ts
        span.attributes["outlast.tries"] = int(data.get("tries", 1))
        if event.type == ev.STEP_FAILED:
            span.error = "cancelled" if data.get("cancelled") else _message(data.get("error"))
        elif data.get("fallback"):
            span.attributes["outlast.fallback"] = True
        _llm_attributes(span, data.get("result"))


def _llm_attributes(span: SpanData, result: Any) -> None:
    """An LLM step's result is its Completion: name the span and add the GenAI semantic conventions."""
    if not isinstance(result, dict) or not {"text", "provider", "model", "tokens_in"} <= result.keys():
        return
    model = str(result["model"])
    span.name, span.kind = f"chat {model}", CLIENT
    span.attributes.update({
        "gen_ai.operation.name": "chat",
        "gen_ai.system": str(result.get("system") or result["provider"]),
        "gen_ai.provider.name": str(result.get("system") or result["provider"]),
        "outlast.llm.provider": str(result["provider"]),
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": int(result.get("tokens_in") or 0),
        "gen_ai.usage.output_tokens": int(result.get("tokens_out") or 0),
        "outlast.llm.attempts": int(result.get("attempts") or 1),
        "outlast.llm.waited": float(result.get("waited") or 0.0),
    })  # fmt: skip
    if result.get("finish_reason"):
        span.attributes["gen_ai.response.finish_reasons"] = [str(result["finish_reason"])]
    if result.get("cost") is not None:
        span.attributes["outlast.llm.cost_usd"] = float(result["cost"])


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return str(error or "failed")
