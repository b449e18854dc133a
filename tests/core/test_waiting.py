"""The waiting primitives in-process (run_local) and their rules: where they may be called."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import BaseModel

import outlast
from outlast import events as ev
from outlast.core.trace import build_trace
from outlast.errors import ConfigError


class Approval(BaseModel):
    ok: bool
    note: str = ""


@outlast.component
async def draft(topic: str) -> str:
    return f"draft about {topic}"


@outlast.workflow
async def reviewed(topic: str) -> dict[str, object]:
    text = await draft(topic)
    approval = await outlast.wait_for_input("approve", Approval, prompt="Publish it?")
    await outlast.sleep(timedelta(hours=6))
    return {"text": text, "ok": approval.ok, "note": approval.note}


@outlast.workflow
async def patient(topic: str) -> str:
    try:
        await outlast.wait_for_input("approve", Approval, timeout=timedelta(days=1))
    except outlast.InputTimeout as exc:
        return f"no answer for {exc.key}"
    return "answered"


@outlast.workflow
async def defaulted() -> bool:
    answer = await outlast.wait_for_input("approve", Approval, timeout=60, default=Approval(ok=False))
    return answer.ok


@outlast.workflow
async def summed(n: int) -> int:
    return n + 1


@outlast.workflow
async def parent(count: int) -> list[int]:
    first = await outlast.start_child(summed, {"n": 100})
    rest = await outlast.gather(*(outlast.run_child(summed, {"n": i}) for i in range(count)))
    return [await first.result(), *rest]


@outlast.workflow
async def failing_child() -> int:
    raise ValueError("child broke")


@outlast.workflow
async def parent_of_failure() -> str:
    try:
        await outlast.run_child(failing_child)
    except outlast.ChildFailed as exc:
        return f"{exc.status}: {exc.error['message']}"
    return "no failure"


async def test_run_local_takes_inputs_and_skips_durable_sleeps() -> None:
    local = await outlast.run_local(reviewed, {"topic": "x"}, inputs={"approve": {"ok": True, "note": "go"}})
    assert local.status == "completed"
    assert local.result == {"text": "draft about x", "ok": True, "note": "go"}
    types = [e.type for e in local.events]
    assert types[types.index(ev.INPUT_REQUESTED) :] == [
        ev.INPUT_REQUESTED, ev.INPUT_RECEIVED, ev.SLEEP_STARTED, ev.SLEEP_ENDED, ev.RUN_COMPLETED,
    ]  # fmt: skip
    requested = next(e for e in local.events if e.type == ev.INPUT_REQUESTED)
    assert requested.data["prompt"] == "Publish it?"
    assert requested.data["schema"]["required"] == ["ok"]
    received = next(e for e in local.events if e.type == ev.INPUT_RECEIVED)
    assert received.step == requested.step == "input:approve#1"


@outlast.workflow
async def with_credentials() -> str:
    creds = await outlast.wait_for_input("creds", secret=True)
    outlast.status(f"using {creds['user']} / {creds['password']}")
    outlast.status("password field present" if "password" in creds else "no password field")
    return str(creds["password"])[::-1]


async def test_a_secret_input_is_masked_in_every_event_but_reaches_the_body() -> None:
    creds = {"user": "alice-the-admin", "password": "correct horse battery"}
    local = await outlast.run_local(with_credentials, inputs={"creds": creds})
    assert local.result == "correct horse battery"[::-1]
    received = next(e for e in local.events if e.type == ev.INPUT_RECEIVED)
    assert received.data["value"] == "[secret]"
    statuses = [e.data["message"] for e in local.events if e.type == ev.STATUS]
    assert statuses[0] == "using [secret] / [secret]"  # every string of the value
    # Its field names are not secrets: an 8-letter key stays readable elsewhere.
    assert statuses[1] == "password field present"


async def test_run_local_validates_inputs_against_the_schema() -> None:
    local = await outlast.run_local(reviewed, {"topic": "x"}, inputs={"approve": {"ok": "perhaps"}})
    assert local.status == "failed"
    assert local.error is not None
    assert "ok" in local.error["message"]


async def test_a_missing_input_times_out_or_says_how_to_supply_it() -> None:
    assert (await outlast.run_local(patient, {"topic": "x"})).result == "no answer for approve"
    assert (await outlast.run_local(defaulted)).result is False
    local = await outlast.run_local(reviewed, {"topic": "x"})
    assert local.status == "failed"
    assert local.error is not None
    assert "inputs={'approve': ...}" in local.error["message"]


async def test_run_local_runs_children_inline() -> None:
    local = await outlast.run_local(parent, {"count": 3})
    assert local.result == [101, 1, 2, 3]
    started = [e.data["child_run_id"] for e in local.events if e.type == ev.CHILD_STARTED]
    assert started == [f"{local.run_id}.c0", f"{local.run_id}.c1", f"{local.run_id}.c3", f"{local.run_id}.c5"]
    assert (await outlast.run_local(parent_of_failure)).result == "failed: child broke"


@outlast.component
async def sneaky() -> None:
    await outlast.wait_for_input("inside")


@outlast.workflow
async def waits_in_a_component() -> None:
    await sneaky()


@outlast.component
async def naps() -> str:
    await outlast.sleep(0.01)  # inside a component: a plain sleep
    return "rested"


@outlast.workflow
async def napping() -> str:
    return await naps()


async def test_waits_belong_to_the_workflow_body() -> None:
    local = await outlast.run_local(waits_in_a_component)
    assert local.status == "failed"
    assert local.error is not None
    assert "not inside the component step 'sneaky#0'" in local.error["message"]
    assert (await outlast.run_local(napping)).result == "rested"


async def test_outside_a_run() -> None:
    with pytest.raises(ConfigError, match="inside a workflow run"):
        outlast.wait_for_input("approve")
    with pytest.raises(ConfigError, match="from inside a workflow run"):
        outlast.start_child(summed, {"n": 1})
    await asyncio.wait_for(outlast.sleep(0), 1)  # a plain sleep
    with pytest.raises(ConfigError, match="must not be negative"):
        outlast.sleep(-1)


@outlast.workflow
async def bad_key() -> None:
    await outlast.wait_for_input("has space")


async def test_input_keys_are_url_safe() -> None:
    local = await outlast.run_local(bad_key)
    assert local.error is not None
    assert "input key 'has space'" in local.error["message"]


async def test_waits_are_spans_of_the_trace() -> None:
    local = await outlast.run_local(reviewed, {"topic": "x"}, inputs={"approve": {"ok": True}})
    spans = build_trace(local.events)
    assert [(s.kind, s.name, s.status) for s in spans] == [
        ("step", "draft", "completed"),
        ("input", "input:approve", "completed"),
        ("sleep", "sleep", "completed"),
    ]
    assert spans[1].result == {"ok": True}
    assert spans[1].args["prompt"] == "Publish it?"
    assert spans[2].args["seconds"] == 6 * 3600

    timed_out = build_trace((await outlast.run_local(patient, {"topic": "x"})).events)
    assert [(s.kind, s.status) for s in timed_out] == [("input", "timed_out")]

    family = await outlast.run_local(parent_of_failure)
    assert [(s.kind, s.name, s.status) for s in build_trace(family.events)] == [
        ("child_start", "start:failing_child", "completed"),
        ("child", "child:failing_child", "failed"),
    ]
