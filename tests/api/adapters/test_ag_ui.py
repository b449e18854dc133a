"""The AG-UI mapping: every event parses as the ``ag-ui-protocol`` models, and ``ag-ui-validate``
finds each stream conformant (no warnings either)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonpatch
import pytest
from ag_ui.core import Event as AgUiEvent
from ag_ui.core import Message, RunAgentInput
from ag_ui_validate.pytest_plugin import assert_valid_agui
from pydantic import TypeAdapter

from outlast import run_local
from outlast.api.adapters.ag_ui import AgUiTranslator, state_delta
from outlast.api.adapters.messages import from_ag_ui_messages
from outlast.events import Event

from . import flows
from .test_ui_message import MESSAGES, crash_log

EVENT = TypeAdapter(AgUiEvent)


def ag_ui_events(events: list[Event], after: int = 0) -> list[dict[str, Any]]:
    """The wire JSON of the translated stream (resuming after seq ``after``), each parsed back."""
    translator = AgUiTranslator(events[0].run_id, "thread-1", "agui-run-1")
    for event in events[:after]:
        translator.translate(event.model_dump())
    frames = translator.reattach() if after else []
    for event in events[after:]:
        frames += translator.translate(event.model_dump())
    wire = [json.loads(translator.dump(f)) for f in frames]
    for item in wire:
        EVENT.validate_python(item)  # the Python SDK's models accept every event
    return wire


def conformant(wire: list[dict[str, Any]]) -> None:
    assert_valid_agui(wire, max_warnings=0)


def state_of(wire: list[dict[str, Any]]) -> Any:
    state: Any = {}
    for item in wire:
        if item["type"] == "STATE_SNAPSHOT":
            state = item["snapshot"]
        elif item["type"] == "STATE_DELTA":
            state = jsonpatch.apply_patch(state, item["delta"])
    return state


def texts(wire: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in wire:
        if item["type"] == "TEXT_MESSAGE_START":
            out.setdefault(item["messageId"], "")
        elif item["type"] == "TEXT_MESSAGE_CONTENT":
            out[item["messageId"]] += item["delta"]
    return out


async def test_a_chat_run_maps_to_a_conformant_agent_run() -> None:
    run = await run_local(flows.chat, {"messages": MESSAGES})
    wire = ag_ui_events(run.events)
    conformant(wire)
    kinds = [w["type"] for w in wire]
    assert kinds[0] == "RUN_STARTED"
    assert kinds[-1] == "RUN_FINISHED"
    assert wire[0]["threadId"] == "thread-1"
    assert wire[0]["runId"] == "agui-run-1"
    assert wire[0]["metadata"]["outlast"]["run_id"] == run.run_id
    assert wire[-1]["result"] == run.result
    assert kinds.index("STEP_STARTED") < kinds.index("TEXT_MESSAGE_START") < kinds.index("TEXT_MESSAGE_END")
    assert texts(wire) == {f"{run.run_id}/say#0@1.1": run.result}
    assert state_of(wire) == {"draft": {"words": 4, "tags": ["a/b"]}}
    customs = {w["name"]: w["value"] for w in wire if w["type"] == "CUSTOM"}
    assert customs["replied"] == {"words": 4}
    assert customs["outlast.status"]["message"] == "thinking"
    assert customs["outlast.progress"]["done"] == 1


async def test_a_failed_try_ends_its_message_and_marks_it() -> None:
    run = await run_local(flows.retried_chat, {"messages": MESSAGES, "key": uuid.uuid4().hex})
    wire = ag_ui_events(run.events)
    conformant(wire)
    first = f"{run.run_id}/flaky_say#0@1.1"
    assert texts(wire) == {first: "Hello ", f"{run.run_id}/flaky_say#0@1.2": run.result}
    marks = [w["value"] for w in wire if w["type"] == "CUSTOM" and w["name"] == "outlast.abandoned"]
    assert [(m["message_id"], m["reason"]) for m in marks] == [(first, "retry")]


async def test_failed_and_cancelled_runs_end_with_run_error() -> None:
    run = await run_local(flows.fails, {"messages": MESSAGES})
    wire = ag_ui_events(run.events)
    conformant(wire)
    assert wire[-1] == {"type": "RUN_ERROR", "message": "ValueError: no reply today", "code": "error"}
    cancelled = [*crash_log()[:8], Event(seq=9, type="run.cancelled", run_id="run-a", attempt=2, ts=0.0,
                                         data={"reason": "cancelled"})]  # fmt: skip
    wire = ag_ui_events(cancelled)
    conformant(wire)
    assert wire[-1]["type"] == "RUN_ERROR"
    assert wire[-1]["code"] == "cancelled"
    assert [
        w["value"]["reason"] for w in wire if w["type"] == "CUSTOM" and w["name"] == "outlast.abandoned"
    ] == ["cancelled"]


async def test_concurrent_steps_and_a_new_attempt_stay_conformant() -> None:
    run = await run_local(flows.concurrent, {"n": 3})
    conformant(ag_ui_events(run.events))
    wire = ag_ui_events(crash_log())
    conformant(wire)
    assert [
        w["value"]["reason"] for w in wire if w["type"] == "CUSTOM" and w["name"] == "outlast.abandoned"
    ] == ["attempt"]


@pytest.mark.parametrize("after", range(1, 17))
def test_a_reattached_stream_is_conformant_and_continues_state_and_messages(after: int) -> None:
    events = crash_log()
    full = ag_ui_events(events)
    resumed = ag_ui_events(events, after)
    conformant(resumed)
    assert resumed[0]["type"] == "RUN_STARTED"
    assert state_of(resumed) == state_of(full) == {"doc": {"words": 3}}
    # A client that kept its messages and appends the resumed deltas ends with the full text.
    kept = texts(ag_ui_events(events[:after]))
    joined = {k: kept.get(k, "") + v for k, v in texts(resumed).items()}
    assert {**kept, **joined} == texts(full)


def test_object_patches_move_under_the_objects_name() -> None:
    assert state_delta("a/b~c", [{"op": "replace", "path": "", "value": {"x": [1]}}]) == [
        {"op": "add", "path": "/a~1b~0c", "value": {"x": [1]}}
    ]
    assert state_delta(
        "doc", [{"op": "add", "path": "/x/1", "value": 2}, {"op": "move", "from": "/y", "path": "/z"}]
    ) == [
        {"op": "add", "path": "/doc/x/1", "value": 2},
        {"op": "move", "from": "/doc/y", "path": "/doc/z"},
    ]


def test_ag_ui_messages_become_chat_completions_messages() -> None:
    body = RunAgentInput.model_validate(
        {"threadId": "t", "runId": "r", "messages": [
            {"id": "1", "role": "developer", "content": "Be brief."},
            {"id": "2", "role": "user", "content": "Hi"},
            {"id": "3", "role": "assistant", "content": "Hello"},
            {"id": "4", "role": "tool", "content": "42", "toolCallId": "c1"},
            {"id": "5", "role": "reasoning", "content": "hmm"},
            {"id": "6", "role": "user", "content": [{"type": "text", "text": "Again"}]},
        ]}
    )  # fmt: skip
    messages: list[Message] = body.messages
    assert from_ag_ui_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": "Again"},
    ]
