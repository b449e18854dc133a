"""Size limits (``outlast.sizes``) and failure details, run in memory with ``run_local``:
errors too large to store, one huge streamed chunk, inputs too large for their events, and the
(capped, masked) tracebacks kept in failure events and the trace."""

from __future__ import annotations

import pytest

import outlast
from outlast import events as ev
from outlast import serde
from outlast.core.trace import build_trace
from outlast.sizes import MAX_EVENT_BYTES, MAX_INPUT_BYTES, MAX_TRACEBACK_CHARS


@outlast.component
async def shout(size: int) -> None:
    raise RuntimeError("x" * size)


@outlast.workflow
async def loud_step(size: int) -> None:
    await shout(size)


@outlast.workflow
async def loud_body(size: int) -> None:
    raise ValueError("y" * size)


@outlast.component(secret_args=("token",))
async def call_api(token: str) -> None:
    raise PermissionError(f"token {token} was refused")


@outlast.workflow
async def refused(token: str) -> None:
    await call_api(token)


@outlast.component
async def flood(size: int, char: str):  # streaming: one chunk of ``size`` characters
    yield char * size


@outlast.workflow
async def flooding(size: int, char: str = "z") -> int:
    return len(await flood(size, char))


@outlast.workflow
async def echo(text: str) -> int:
    return len(text)


def only(events: list[ev.Event], type: str) -> ev.Event:
    found = [e for e in events if e.type == type]
    assert len(found) == 1, [e.type for e in events]
    return found[0]


def encoded_sizes(events: list[ev.Event]) -> list[int]:
    return [len(serde.dumps(e.model_dump())) for e in events]


async def test_an_error_too_large_to_store_fails_the_run_once_with_its_cause() -> None:
    local = await outlast.run_local(loud_body, {"size": 3_000_000})
    assert local.status == "failed"
    error = only(local.events, ev.RUN_FAILED).data["error"]
    assert error["type"] == "ValueError"
    assert error["message"].startswith("yyyy")
    assert error["message"].endswith("[cut: 3,000,000 characters in all]")
    assert len(error["message"]) < 5_000
    assert local.error is not None
    assert local.error["message"] == error["message"]
    assert max(encoded_sizes(local.events)) < 100_000


async def test_a_step_error_too_large_to_store_is_capped_in_step_failed_too() -> None:
    local = await outlast.run_local(loud_step, {"size": 2_000_000})
    assert local.status == "failed"
    step_error = only(local.events, ev.STEP_FAILED).data["error"]
    run_error = only(local.events, ev.RUN_FAILED).data["error"]
    for error in (step_error, run_error):
        assert error["type"] == "RuntimeError"
        assert error["message"].endswith("[cut: 2,000,000 characters in all]")


async def test_failures_keep_a_capped_masked_traceback_in_events_and_the_trace() -> None:
    local = await outlast.run_local(refused, {"token": "tok-1234567890"})
    step_error = only(local.events, ev.STEP_FAILED).data["error"]
    run_error = only(local.events, ev.RUN_FAILED).data["error"]
    for error in (step_error, run_error):
        trace = error["traceback"]
        assert trace.startswith("Traceback (most recent call last):")
        assert "in call_api" in trace
        assert trace.rstrip().endswith("PermissionError: token [secret] was refused")
        assert "tok-1234567890" not in trace
        assert "tok-1234567890" not in error["message"]
    assert "in refused" in run_error["traceback"]  # the workflow body's frame, where it surfaced
    assert local.error is not None
    assert "tok-1234567890" not in local.error["traceback"]
    (span,) = build_trace(local.events)
    assert span.error is not None
    assert span.error["traceback"] == step_error["traceback"]
    # A huge message does not crowd the frames out: each line is capped, then the whole.
    big = await outlast.run_local(loud_step, {"size": 2_000_000})
    trace = only(big.events, ev.STEP_FAILED).data["error"]["traceback"]
    assert "in shout" in trace
    assert len(trace) <= MAX_TRACEBACK_CHARS + 100


@pytest.mark.parametrize("char", ["z", "\x01", "é"])
async def test_one_huge_streamed_chunk_is_split_across_frames(char: str) -> None:
    size = 3_000_000 if char == "z" else 1_000_000  # "\x01" takes 6 bytes of JSON, "é" 2
    local = await outlast.run_local(flooding, {"size": size, "char": char})
    assert local.status == "completed", local.error
    assert local.result == size
    frames = [e for e in local.events if e.type == ev.OUTPUT]
    assert len(frames) > 1
    assert "".join(e.data["text"] for e in frames) == char * size
    assert max(encoded_sizes(local.events)) <= MAX_EVENT_BYTES
    completed = only(local.events, ev.STEP_COMPLETED).data
    assert completed["result"] is None  # too large for the event; its frames carried the text
    assert completed["result_omitted"] == len(serde.dumps(char * size))


async def test_an_input_too_large_for_its_events_is_refused_at_start() -> None:
    with pytest.raises(outlast.InputValidationError, match=r"over the [\d,]+-byte limit") as raised:
        await outlast.run_local(echo, {"text": "a" * MAX_INPUT_BYTES})
    assert raised.value.errors[0]["loc"] == ["input"]
    assert raised.value.errors[0]["type"] == "too_large"
    local = await outlast.run_local(echo, {"text": "a" * (MAX_INPUT_BYTES - 1_000)})
    assert local.status == "completed"
