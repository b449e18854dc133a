"""The AI SDK UI message stream mapping, on real event logs (``run_local``) and the protocol's
worked crash example."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from outlast import run_local
from outlast.api.adapters.messages import UIMessage, from_ui_messages
from outlast.api.adapters.stream import sse_frames
from outlast.api.adapters.ui_message import UIMessageTranslator
from outlast.events import Event

from . import flows
from .support import assemble, live_text, ui_parts

MESSAGES = [{"role": "user", "content": "durable streams"}]


def types(parts: list[dict[str, Any]]) -> list[str]:
    return [p["type"] for p in parts]


async def test_a_chat_run_is_one_assistant_message_whose_text_is_the_result() -> None:
    run = await run_local(flows.chat, {"messages": MESSAGES})
    parts = ui_parts(run.events)
    assert parts[0] == {"type": "start", "messageId": run.run_id}
    assert types(parts)[-1] == "finish"
    assert parts[-1]["finishReason"] == "stop"
    assert [p["id"] for p in parts if p["type"] == "text-start"] == ["say#0@1.1"]
    assert parts[types(parts).index("text-start")]["providerMetadata"] == {
        "outlast": {"id": "say#0@1.1", "step": "say#0", "attempt": 1, "try": 1}
    }
    assert types(parts).index("start-step") < types(parts).index("text-start")
    assert types(parts).index("text-end") < types(parts).index("finish-step")
    message = assemble(parts)
    assert message["id"] == run.run_id
    assert live_text(message) == run.result == "You said: durable streams "
    data = {p["type"]: p["data"] for p in message["parts"] if p["type"].startswith("data-")}
    assert data["data-outlast-status"]["message"] == "thinking"
    assert data["data-outlast-progress"] == {"done": 1, "total": 1, "label": "reply", "step": None}
    # Objects are reconciled by name: one part, holding the latest value (patches applied).
    objects = [p for p in message["parts"] if p["type"] == "data-outlast-object"]
    assert [o["data"]["value"] for o in objects] == [{"words": 4, "tags": ["a/b"]}]
    assert data["data-outlast-custom"] == {"name": "replied", "data": {"words": 4}, "step": None}
    assert data["data-outlast-run"]["status"] == "completed"
    assert data["data-outlast-run"]["result"] == run.result


async def test_a_failed_try_is_closed_marked_and_not_merged_with_the_retry() -> None:
    run = await run_local(flows.retried_chat, {"messages": MESSAGES, "key": uuid.uuid4().hex})
    parts = ui_parts(run.events)
    ends = [p for p in parts if p["type"] == "text-end"]
    assert [e["id"] for e in ends] == ["flaky_say#0@1.1", "flaky_say#0@1.2"]
    assert ends[0]["providerMetadata"]["outlast"]["abandoned"] == "retry"
    assert "providerMetadata" not in ends[1]
    marks = [p for p in parts if p["type"] == "data-outlast-abandoned"]
    assert marks == [
        {"type": "data-outlast-abandoned", "id": "flaky_say#0@1.1",
         "data": {"id": "flaky_say#0@1.1", "step": "flaky_say#0", "attempt": 1, "try": 1, "reason": "retry"}}
    ]  # fmt: skip
    message = assemble(parts)
    texts = [p["text"] for p in message["parts"] if p["type"] == "text"]
    assert texts == ["Hello ", "Hello again world."]
    assert live_text(message) == run.result == "Hello again world."


async def test_streamed_text_replaced_by_a_fallback_is_abandoned() -> None:
    run = await run_local(flows.fallback_chat, {"messages": MESSAGES})
    message = assemble(ui_parts(run.events))
    assert [
        p["providerMetadata"]["outlast"]["abandoned"] for p in message["parts"] if p["type"] == "text"
    ] == ["fallback"]
    assert live_text(message) == ""
    assert run.result == "(no answer)"


async def test_concurrent_steps_never_get_a_finish_step_while_another_text_part_is_open() -> None:
    run = await run_local(flows.concurrent, {"n": 3})
    parts = ui_parts(run.events)
    starts = [i for i, p in enumerate(parts) if p["type"] == "text-start"]
    ends = [i for i, p in enumerate(parts) if p["type"] == "text-end"]
    assert max(starts) < min(ends), "the test needs the steps' text to interleave"
    message = assemble(parts)  # asserts the consumer's rules at every part
    assert types(parts).count("start-step") == types(parts).count("finish-step") == 3
    texts = {
        p["providerMetadata"]["outlast"]["step"]: p["text"] for p in message["parts"] if p["type"] == "text"
    }
    assert texts == {"slow_say#0": "0a 0b ", "slow_say#1": "1a 1b ", "slow_say#2": "2a 2b "}


async def test_a_failed_run_sends_error_then_finish() -> None:
    run = await run_local(flows.fails, {"messages": MESSAGES})
    parts = ui_parts(run.events)
    assert types(parts)[-3:] == ["data-outlast-run", "error", "finish"]
    assert parts[-2] == {"type": "error", "errorText": "ValueError: no reply today"}
    assert parts[-1]["finishReason"] == "error"
    assert live_text(assemble(parts)) == "doomed "  # the step completed: its text stands


def crash_log() -> list[Event]:
    """docs/protocol.md §16: a process killed after seq 8, resumed by attempt 2."""
    rows: list[tuple[int, str, int, str | None, dict[str, Any]]] = [
        (1, "run.queued", 0, None, {"workflow": "post", "input": {"topic": "t"}, "version": "dev"}),
        (2, "run.started", 1, None, {"attempt": 1, "checkpoints": 0, "worker": "w1"}),
        (3, "status", 1, None, {"message": "planning"}),
        (4, "step.started", 1, "outline#0", {"name": "outline", "parent": None, "position": "0", "args": {}}),
        (5, "step.completed", 1, "outline#0", {"name": "outline", "result": ["Intro"], "tries": 1,
                                               "duration": 0}),
        (6, "step.started", 1, "write#1", {"name": "write", "parent": None, "position": "1", "args": {}}),
        (7, "output", 1, "write#1", {"try": 1, "text": "Hello "}),
        (8, "output", 1, "write#1", {"try": 1, "text": "durable "}),
        (9, "run.started", 2, None, {"attempt": 2, "checkpoints": 1, "worker": "w1"}),
        (10, "step.started", 2, "write#1", {"name": "write", "parent": None, "position": "1", "args": {}}),
        (11, "output", 2, "write#1", {"try": 1, "text": "Hello "}),
        (12, "output", 2, "write#1", {"try": 1, "text": "durable "}),
        (13, "output", 2, "write#1", {"try": 1, "text": "world."}),
        (14, "step.completed", 2, "write#1", {"name": "write", "result": "Hello durable world.", "tries": 1,
                                              "duration": 0.1}),
        (15, "object", 2, None, {"name": "doc",
                                 "patch": [{"op": "replace", "path": "", "value": {"words": 3}}]}),
        (16, "run.completed", 2, None, {"result": "Hello durable world."}),
    ]  # fmt: skip
    return [
        Event(seq=s, type=t, run_id="run-a", attempt=a, step=st, ts=0.0, data=d) for s, t, a, st, d in rows
    ]


def test_a_new_attempt_abandons_the_previous_attempts_open_text() -> None:
    parts = ui_parts(crash_log())
    abandoned = [p for p in parts if p["type"] == "data-outlast-abandoned"]
    assert [p["data"]["reason"] for p in abandoned] == ["attempt"]
    assert abandoned[0]["id"] == "write#1@1.1"
    message = assemble(parts)
    assert [p["text"] for p in message["parts"] if p["type"] == "text"] == [
        "Hello durable ",
        "Hello durable world.",
    ]
    assert live_text(message) == "Hello durable world."
    assert types(parts).count("start-step") == types(parts).count("finish-step") == 3


@pytest.mark.parametrize("log", ["crash", "retried"])
async def test_resuming_from_any_cursor_continues_the_stream_exactly(log: str) -> None:
    """A translator that catches up on events 1..N, then translates the rest, emits exactly the
    tail of the uninterrupted stream: resuming loses and repeats nothing."""
    if log == "crash":
        events = crash_log()
    else:
        events = (await run_local(flows.retried_chat, {"messages": MESSAGES, "key": uuid.uuid4().hex})).events
    full = ui_parts(events)
    for n in range(len(events) + 1):
        primed = UIMessageTranslator(events[0].run_id)
        head = [p for e in events[:n] for p in primed.translate(e.model_dump())]
        tail = [p for e in events[n:] for p in primed.translate(e.model_dump())]
        assert head + tail == full, n


def test_sse_ids_name_the_event_and_the_frame_within_it() -> None:
    payloads = [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert sse_frames(payloads, 7) == (
        b'id: 7.1\ndata: {"a":1}\n\nid: 7.2\ndata: {"b":2}\n\nid: 7\ndata: {"c":3}\n\n'
    )
    assert sse_frames(payloads, 7, skip=2) == b'id: 7\ndata: {"c":3}\n\n'
    assert sse_frames([], 7) == b""


def test_ui_messages_become_chat_completions_messages() -> None:
    messages = [
        UIMessage.model_validate(m)
        for m in [
            {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"},
                                                   {"type": "file", "url": "x"}]},
            {"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "Hel", "providerMetadata": {"outlast": {"abandoned": "retry"}}},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": "!"},
                {"type": "data-outlast-status", "data": {"message": "x"}},
            ]},
            {"id": "a2", "role": "assistant", "parts": [{"type": "data-outlast-run", "data": {}}]},
            {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Again"}]},
        ]
    ]  # fmt: skip
    assert from_ui_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]


def test_parts_are_compact_json_lines() -> None:
    translator = UIMessageTranslator("r")
    part = {"type": "text-delta", "id": "x", "delta": "line one\nline two é"}
    raw = translator.dump(part)
    assert b"\n" not in raw
    assert json.loads(raw) == part


async def test_waits_are_one_reconciled_data_part_per_wait() -> None:
    run = await run_local(flows.asks, {"messages": MESSAGES}, inputs={"name": "Ada"})
    message = assemble(ui_parts(run.events))
    waits = [p for p in message["parts"] if p["type"] == "data-outlast-wait"]
    assert len(waits) == 1
    assert waits[0]["id"] == "input:name#0"
    assert waits[0]["data"]["kind"] == "input"
    assert waits[0]["data"]["state"] == "received"  # the requested part, updated in place
    assert waits[0]["data"]["value"] == "Ada"
    assert live_text(message) == run.result == "Hi Ada"
