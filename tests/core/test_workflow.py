"""Workflows run in memory (``run_local`` / ``Runner`` over ``MemoryStore``): events, identity, input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

import outlast
from outlast import Retry, component, emit, progress, publish, status, workflow
from outlast import events as ev
from outlast.events import Event

KEY = "sk-test-0123456789AB"  # 20 characters


def of_type(events: list[Event], type: str) -> list[Event]:
    return [e for e in events if e.type == type]


# -- the event stream ---------------------------------------------------------------------------


@component
async def research(topic: str) -> list[str]:
    return [f"{topic} fact 1", f"{topic} fact 2"]


@component
async def summarise(notes: list[str]) -> str:
    return " / ".join(notes)


@workflow(name="simple")
async def simple(topic: str) -> str:
    notes = await research(topic)
    return await summarise(notes)


async def test_lifecycle_events_are_contiguous_and_ordered() -> None:
    run = await outlast.run_local(simple, {"topic": "ai"})
    assert run.status == "completed"
    assert run.result == "ai fact 1 / ai fact 2"
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
    assert [(e.type, e.step) for e in run.events] == [
        ("run.queued", None),
        ("run.started", None),
        ("step.started", "research#0"),
        ("step.completed", "research#0"),
        ("step.started", "summarise#1"),
        ("step.completed", "summarise#1"),
        ("run.completed", None),
    ]
    assert {e.run_id for e in run.events} == {run.run_id}
    assert run.events[0].data["input"] == {"topic": "ai"}
    assert run.events[3].data["result"] == ["ai fact 1", "ai fact 2"]
    assert run.events[3].data["tries"] == 1
    assert run.events[-1].data == {"result": "ai fact 1 / ai fact 2"}


async def test_run_result_equals_the_plain_call() -> None:
    run = await outlast.run_local(simple, {"topic": "db"})
    assert run.result == await simple("db")


async def test_streaming_output_is_coalesced_into_few_events() -> None:
    @component
    async def tokens(n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"t{i % 10}"

    @workflow(name="stream")
    async def wf(n: int) -> str:
        return await tokens(n)

    run = await outlast.run_local(wf, {"n": 2000})
    assert run.status == "completed"
    outputs = of_type(run.events, "output")
    assert 1 <= len(outputs) <= 40  # 2,000 chunks, a handful of frames
    assert all(e.step == "tokens#0" and e.data["try"] == 1 for e in outputs)
    text = "".join(e.data["text"] for e in outputs)
    assert text == run.result == "".join(f"t{i % 10}" for i in range(2000))
    last_output = max(e.seq for e in outputs)
    assert last_output < of_type(run.events, "step.completed")[0].seq


async def test_output_from_a_retried_step_carries_each_try() -> None:
    tries = 0

    @component(retry=Retry(attempts=2, jitter=False, backoff_base=0.001))
    async def speaker() -> str:
        nonlocal tries
        tries += 1
        outlast.output("x")
        outlast.output({"n": tries})  # a non-text chunk goes out in its own frame
        if tries == 1:
            raise ConnectionError("dropped")
        return "done"

    @workflow(name="speaking")
    async def wf() -> str:
        outlast.output("ignored")  # the workflow body is no step: nothing is written
        return await speaker()

    run = await outlast.run_local(wf, {})
    assert run.result == "done"
    outputs = [(e.step, e.data) for e in of_type(run.events, "output")]
    assert outputs == [
        ("speaker#0", {"try": 1, "text": "x"}),
        ("speaker#0", {"try": 1, "items": [{"n": 1}]}),
        ("speaker#0", {"try": 2, "text": "x"}),
        ("speaker#0", {"try": 2, "items": [{"n": 2}]}),
    ]
    retrying = of_type(run.events, "step.retrying")[0].seq
    assert [e.seq < retrying for e in of_type(run.events, "output")] == [True, True, False, False]


async def test_retrying_events_carry_error_try_and_delay() -> None:
    calls = 0

    @component(retry=Retry(attempts=3, jitter=False, backoff_base=0.001))
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"refused {calls}")
        return "ok"

    @workflow(name="retrying")
    async def wf() -> str:
        return await flaky()

    run = await outlast.run_local(wf, {})
    assert run.result == "ok"
    retrying = of_type(run.events, "step.retrying")
    assert [e.data["try"] for e in retrying] == [1, 2]
    assert [e.data["error"] for e in retrying] == [
        {"type": "ConnectionError", "message": "refused 1"},
        {"type": "ConnectionError", "message": "refused 2"},
    ]
    assert [e.data["delay"] for e in retrying] == [0.001, 0.002]
    assert of_type(run.events, "step.completed")[0].data["tries"] == 3


async def test_fallback_step_is_recorded_as_fallback() -> None:
    @component(retry=Retry(attempts=2, jitter=False, backoff_base=0.001), fallback="cached")
    async def fetch(url: str) -> str:
        raise ConnectionError(f"cannot reach {url}")

    @workflow(name="fallback")
    async def wf() -> str:
        return await fetch("https://example.com")

    run = await outlast.run_local(wf, {})
    assert run.status == "completed"
    assert run.result == "cached"
    assert len(of_type(run.events, "step.retrying")) == 1
    assert of_type(run.events, "step.failed") == []
    done = of_type(run.events, "step.completed")[0].data
    assert done["fallback"] is True
    assert done["result"] == "cached"
    assert done["tries"] == 2
    assert done["error"] == {"type": "ConnectionError", "message": "cannot reach https://example.com"}


async def test_failing_step_fails_the_run() -> None:
    @component
    async def broken(x: int) -> int:
        raise ValueError(f"bad x {x}")

    @workflow(name="failing")
    async def wf() -> int:
        return await broken(4)

    run = await outlast.run_local(wf, {})
    assert run.status == "failed"
    assert run.result is None
    assert [e.type for e in run.events][-3:] == ["step.started", "step.failed", "run.failed"]
    failed = of_type(run.events, "step.failed")[0]
    assert failed.step == "broken#0"
    step_error = dict(failed.data["error"])
    assert step_error.pop("traceback").endswith("ValueError: bad x 4\n")  # (docs/protocol.md §3)
    assert step_error == {"type": "ValueError", "message": "bad x 4"}
    end = run.events[-1].data
    assert end["reason"] == "error"
    assert run.error == end["error"]
    run_error = dict(end["error"])
    assert "Traceback (most recent call last)" in run_error.pop("traceback")
    assert run_error == {"type": "ValueError", "message": "bad x 4", "reason": "error"}
    with pytest.raises(outlast.RunFailed, match="bad x 4"):
        await outlast.Runner(outlast.MemoryStore()).run(wf, {})


async def test_an_oversized_result_fails_the_run_clearly() -> None:
    @outlast.workflow
    async def huge() -> str:
        return "x" * (2 << 20)

    run = await outlast.run_local(huge)
    assert run.status == "failed"
    assert run.error is not None
    assert "exceeds" in run.error["message"]
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))


async def test_a_stray_cancelled_error_from_workflow_code_fails_the_run() -> None:
    @outlast.workflow
    async def confused() -> None:
        raise asyncio.CancelledError

    run = await outlast.run_local(confused)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "CancelledError"


# -- step identity and emissions ----------------------------------------------------------------


@component
async def inner(x: int) -> int:
    return x + 1


@component
async def other(x: int) -> int:
    return x * 2


@component
async def outer(x: int) -> int:
    a = await inner(x)
    b = await inner(a)
    return await other(b)


async def test_nested_step_ids_follow_call_order() -> None:
    @workflow(name="nested")
    async def wf(x: int) -> list[int]:
        return [await outer(x), await inner(0)]

    run = await outlast.run_local(wf, {"x": 1})
    assert run.result == [6, 1]
    started = of_type(run.events, "step.started")
    assert [(e.step, e.data["parent"], e.data["position"]) for e in started] == [
        ("outer#0", None, "0"),
        ("outer#0/inner#0", "outer#0", "0/0"),
        ("outer#0/inner#1", "outer#0", "0/1"),
        ("outer#0/other#2", "outer#0", "0/2"),
        ("inner#1", None, "1"),
    ]
    completed = [e.step for e in of_type(run.events, "step.completed")]
    assert completed == ["outer#0/inner#0", "outer#0/inner#1", "outer#0/other#2", "outer#0", "inner#1"]


async def test_publish_emit_progress_and_status() -> None:
    @component
    async def step() -> str:
        status("inside", detail=1)
        emit("citation", {"url": "https://a.example"})
        return "x"

    @workflow(name="emissions")
    async def wf() -> str:
        status("starting")
        publish("draft", {"title": "t", "tags": ["a"]})
        publish("draft", {"title": "t2", "tags": ["a", "b"]})
        publish("draft", {"title": "t2", "tags": ["a", "b"]})  # unchanged: no event
        progress(1, 3, "sections")
        return await step()

    run = await outlast.run_local(wf, {})
    assert run.status == "completed"
    statuses = of_type(run.events, "status")
    assert [(e.step, e.data) for e in statuses] == [
        (None, {"message": "starting"}),
        ("step#0", {"message": "inside", "detail": 1}),
    ]
    objects = of_type(run.events, "object")
    assert len(objects) == 2
    assert objects[0].data == {
        "name": "draft",
        "patch": [{"op": "replace", "path": "", "value": {"title": "t", "tags": ["a"]}}],
    }
    second = objects[1].data
    assert second["name"] == "draft"
    assert sorted(second["patch"], key=lambda op: op["path"]) == [
        {"op": "add", "path": "/tags/1", "value": "b"},
        {"op": "replace", "path": "/title", "value": "t2"},
    ]
    (prog,) = of_type(run.events, "progress")
    assert prog.data == {"done": 1, "total": 3, "label": "sections"}
    (custom,) = of_type(run.events, "custom")
    assert custom.step == "step#0"
    assert custom.data == {"name": "citation", "data": {"url": "https://a.example"}}


async def test_an_unencodable_log_raises_without_leaving_a_seq_gap() -> None:
    @outlast.workflow
    async def chatty() -> str:
        outlast.status(42)  # type: ignore[arg-type]  # coerced, not fatal
        with pytest.raises(outlast.SerializationError):
            outlast.log("hello", extra=object())
        outlast.status("after")
        return "ok"

    run = await outlast.run_local(chatty)
    assert (run.status, run.result) == ("completed", "ok")
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
    assert [e.data["message"] for e in run.events if e.type == ev.STATUS] == ["42", "after"]


# -- secrets ------------------------------------------------------------------------------------


@component(secret_args=("api_key",))
async def call_llm(prompt: str, api_key: str) -> str:
    status(f"calling with {api_key}")
    return f"answer to {prompt} (key {api_key})"


async def test_secret_never_reaches_an_event() -> None:
    @workflow(name="secrets")
    async def wf(prompt: str) -> str:
        return await call_llm(prompt, api_key=KEY)

    assert len(KEY) == 20
    run = await outlast.run_local(wf, {"prompt": "why"})
    assert run.status == "completed"
    assert run.result == f"answer to why (key {KEY})"  # the caller still gets the real value
    for event in run.events:
        assert KEY not in event.model_dump_json(), event
    started = of_type(run.events, "step.started")[0]
    assert started.data["args"] == {"prompt": "why", "api_key": "[secret]"}
    assert of_type(run.events, "status")[0].data["message"] == "calling with [secret]"
    assert of_type(run.events, "step.completed")[0].data["result"] == "answer to why (key [secret])"


@component(secret_args=("api_key",))
async def reject(api_key: str) -> str:
    raise PermissionError(f"key {api_key} revoked")


@workflow(name="secret-error")
async def rejecting() -> str:
    return await reject(KEY)


async def test_secret_in_an_error_is_masked() -> None:
    run = await outlast.run_local(rejecting, {})
    assert run.status == "failed"
    for event in run.events:
        assert KEY not in event.model_dump_json(), event
    assert of_type(run.events, "step.failed")[0].data["error"]["message"] == "key [secret] revoked"
    assert of_type(run.events, "run.failed")[0].data["error"]["message"] == "key [secret] revoked"


async def test_secret_in_the_run_record_error_is_masked() -> None:
    store = outlast.MemoryStore()
    runner = outlast.Runner(store)
    run_id = await runner.start(rejecting, {})
    assert (await runner.execute(rejecting, run_id)).status == "failed"
    record = await store.get_run(run_id)
    assert record.error is not None
    assert KEY not in record.model_dump_json()


async def test_secret_as_a_dict_key_is_masked() -> None:
    @component(secret_args=("api_key",))
    async def by_key(api_key: str) -> dict[str, int]:
        return {api_key: 1}

    @workflow(name="secret-key")
    async def wf() -> dict[str, int]:
        return await by_key(KEY)

    run = await outlast.run_local(wf, {})
    assert run.status == "completed"
    for event in run.events:
        assert KEY not in event.model_dump_json(), event


# -- workflow input -----------------------------------------------------------------------------


class Brief(BaseModel):
    topic: str
    words: int = 500


seen_briefs: list[Any] = []


@workflow(name="typed-input")
async def typed(brief: Brief, sections: int, tone: str = "neutral") -> str:
    seen_briefs.append(brief)
    return f"{brief.topic}:{brief.words}:{sections}:{tone}"


def test_input_schema_lists_parameters_required_and_defaults() -> None:
    schema = typed.input_schema()
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"brief", "sections", "tone"}
    assert sorted(schema["required"]) == ["brief", "sections"]
    assert schema["properties"]["sections"]["type"] == "integer"
    assert schema["properties"]["tone"]["default"] == "neutral"
    assert schema.get("additionalProperties") is False


def test_validate_input_names_bad_and_unknown_fields() -> None:
    with pytest.raises(outlast.InputValidationError) as info:
        typed.validate_input({"brief": {"topic": "x"}, "sections": "many"})
    assert [e["loc"] for e in info.value.errors] == [["sections"]]
    assert "sections" in str(info.value)
    with pytest.raises(outlast.InputValidationError) as nested:
        typed.validate_input({"brief": {"words": 3}, "sections": 1})
    assert ["brief", "topic"] in [e["loc"] for e in nested.value.errors]
    with pytest.raises(outlast.InputValidationError) as unknown:
        typed.validate_input({"brief": {"topic": "x"}, "sections": 1, "colour": "red"})
    assert [e["loc"] for e in unknown.value.errors] == [["colour"]]


def test_validate_input_returns_json_with_defaults() -> None:
    stored = typed.validate_input({"brief": {"topic": "x"}, "sections": "2"})
    assert stored == {"brief": {"topic": "x", "words": 500}, "sections": 2, "tone": "neutral"}


async def test_model_parameters_are_rebuilt_inside_the_workflow() -> None:
    seen_briefs.clear()
    run = await outlast.run_local(typed, {"brief": {"topic": "ai", "words": 50}, "sections": 2})
    assert run.status == "completed"
    assert run.result == "ai:50:2:neutral"
    assert len(seen_briefs) == 1
    assert isinstance(seen_briefs[0], Brief)
    with pytest.raises(outlast.InputValidationError):
        await outlast.run_local(typed, {"sections": 1})


def test_workflow_must_be_async() -> None:
    def sync_fn(x: int) -> int:
        return x

    with pytest.raises(outlast.ConfigError, match="async"):
        workflow(sync_fn)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["has space", "slash/name", "ünïcode"])
def test_workflow_name_is_validated(name: str) -> None:
    async def fn() -> None:
        return None

    with pytest.raises(outlast.ConfigError):
        workflow(name=name)(fn)
    assert workflow(name="ok-name_1.v2")(fn).name == "ok-name_1.v2"


def test_registry_get_missing_names_the_registered_ones() -> None:
    registry = outlast.Registry([simple, typed])
    assert len(registry) == 2
    assert registry.get("simple") is simple
    with pytest.raises(outlast.WorkflowNotFound, match="missing") as info:
        registry.get("missing")
    assert "simple" in str(info.value)
    assert "typed-input" in str(info.value)
