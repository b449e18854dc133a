"""Typed statuses and reasons: StrEnums that are their strings, so what is stored stays the same."""

from __future__ import annotations

import json

import pytest

import outlast
from outlast import events as ev
from outlast import serde
from outlast.events import AttemptStatus, ClaimStatus, Reason, RunStatus
from outlast.store.memory import MemoryStore


def test_members_are_their_strings_in_json_sets_and_dicts() -> None:
    assert RunStatus.COMPLETED == "completed"
    assert hash(RunStatus.COMPLETED) == hash("completed")
    assert "failed" in ev.TERMINAL_STATUSES
    assert RunStatus.WAITING not in ev.TERMINAL_STATUSES
    assert serde.dumps({"status": RunStatus.CANCELLED, "reason": Reason.ATTEMPTS_EXHAUSTED}) == (
        b'{"status":"cancelled","reason":"attempts_exhausted"}'
    )
    assert json.dumps([ClaimStatus.OK, AttemptStatus.SUSPENDED]) == '["ok", "suspended"]'


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (RunStatus, {"queued", "running", "waiting", "completed", "failed", "cancelled"}),
        (AttemptStatus, {"completed", "failed", "cancelled", "suspended", "abandoned"}),
        (ClaimStatus, {"ok", "alive", "terminal", "cancelled", "exhausted", "unserved", "waiting", "gone"}),
        (Reason, {"error", "non_determinism", "attempts_exhausted", "workflow_not_found", "cancelled"}),
    ],
)
def test_each_enum_lists_exactly_the_values_the_protocol_uses(enum: type, values: set[str]) -> None:
    assert {member.value for member in enum} == values


@outlast.workflow
async def boom() -> None:
    raise ValueError("no")


async def test_records_outcomes_and_events_carry_typed_values_with_unchanged_text() -> None:
    local = await outlast.run_local(boom, {})
    assert local.status is AttemptStatus.FAILED
    assert local.error is not None
    assert local.error["reason"] is Reason.ERROR
    last = local.events[-1]
    assert (last.type, last.data["reason"], last.data["error"]["type"]) == (
        ev.RUN_FAILED,
        "error",
        "ValueError",
    )

    store = MemoryStore()
    runner = outlast.Runner(store)
    run_id = await runner.start(boom, {})
    await runner.execute(boom, run_id)
    record = await store.get_run(run_id)
    assert record.status is RunStatus.FAILED  # decoded from the stored text "failed"
    assert record.error is not None
    assert record.error.pop("traceback").endswith("ValueError: no\n")
    assert record.error == {"type": "ValueError", "message": "no", "reason": "error"}


def test_the_openapi_document_names_the_run_statuses() -> None:
    from outlast.api.app import create_app

    schema = create_app("redis://127.0.0.1:1/0").openapi()
    assert schema["components"]["schemas"]["RunStatus"]["enum"] == [s.value for s in RunStatus]
    summary = schema["components"]["schemas"]["RunSummary"]["properties"]["status"]
    assert summary == {"$ref": "#/components/schemas/RunStatus"}


def test_the_python_client_decodes_statuses_into_the_same_enum() -> None:
    from outlast.client.models import Run

    assert Run.model_validate({"run_id": "r", "status": "waiting"}).status is RunStatus.WAITING
    assert (
        Run.model_validate({"run_id": "r", "status": "cancelling"}).status == "cancelling"
    )  # cancel()'s answer
