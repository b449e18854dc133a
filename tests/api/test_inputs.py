"""``POST /v1/runs/{id}/inputs/{key}`` and the pending waits ``GET /v1/runs/{id}`` shows.

The waiting workflow runs in an in-process worker of its own deployment version, so the shared
worker process (which does not know it) never takes its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast.client import AsyncClient, Client, ClientError
from outlast.worker import Worker

from .conftest import Servers
from .support import ApiServer
from .test_errors import error_of

VERSION = "inputs-test"


class Approval(BaseModel):
    ok: bool


@outlast.workflow
async def review(doc: str) -> dict[str, Any]:
    got = await outlast.wait_for_input("approve", Approval, prompt="Approve?", timeout=timedelta(hours=1))
    return {"doc": doc, "ok": got.ok}


@outlast.workflow
async def sign_in() -> int:
    token = await outlast.wait_for_input("token", prompt="API token?", secret=True)
    outlast.status(f"signed in with {token}")
    return len(token)


@pytest.fixture
async def review_worker(store_redis: aioredis.Redis) -> AsyncIterator[Worker]:
    worker = Worker([review, sign_in], store_redis, version=VERSION, heartbeat=0.2, lease_timeout=1.0)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait([task, ready], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    assert worker.ready.is_set(), "the review worker did not start"
    yield worker
    worker.stop()
    await asyncio.wait_for(task, 20)


async def until_waiting(client: AsyncClient, run_id: str) -> None:
    """Follow the run's events until it suspends (``run.waiting``)."""
    async with asyncio.timeout(20), contextlib.aclosing(client.events(run_id)) as events:
        async for event in events:
            assert not event.terminal, f"run {run_id} ended instead of waiting: {event}"
            if event.type == "run.waiting":
                return


async def start_waiting_review(client: AsyncClient, doc: str) -> str:
    run = await client.start("review", {"doc": doc}, version=VERSION)
    await until_waiting(client, run.run_id)
    return run.run_id


async def still_waiting(http: httpx.AsyncClient, run_id: str, last_seq: int | None = None) -> dict[str, Any]:
    """The run is waiting for ``approve`` as before (and wrote no event when ``last_seq`` is given)."""
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "waiting"
    assert [w["key"] for w in run["waiting_for"]] == ["approve"]
    if last_seq is not None:
        assert run["last_seq"] == last_seq
    return dict(run)


def inputs_url(run_id: str, key: str = "approve") -> str:
    return f"/v1/runs/{run_id}/inputs/{key}"


async def test_get_shows_the_pending_input_request(
    review_worker: Worker, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    run_id = await start_waiting_review(client, "spec.md")
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "waiting"
    [wait] = run["waiting_for"]
    assert wait["kind"] == "input"
    assert wait["key"] == "approve"
    assert wait["prompt"] == "Approve?"
    assert wait["step"].startswith("input:approve#")
    assert wait["child_run_id"] is None
    assert wait["secret"] is False
    assert wait["schema"]["properties"]["ok"]["type"] == "boolean"
    assert wait["schema"]["required"] == ["ok"]
    # The deadline is stored in server milliseconds and shown in seconds since the epoch.
    assert time.time() + 3600 - 120 < wait["deadline"] < time.time() + 3600 + 5


async def test_bad_value_is_422_and_leaves_the_run_waiting_then_a_good_one_completes_it(
    review_worker: Worker, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    run_id = await start_waiting_review(client, "draft.md")
    before = await still_waiting(http, run_id)

    wrong_type = error_of(await http.post(inputs_url(run_id), json={"ok": "maybe"}), 422, "invalid_input")
    assert wrong_type["message"] == "input 'approve' at ok: 'maybe' is not of type 'boolean'"
    assert wrong_type["details"] == [
        {"loc": ["ok"], "msg": "'maybe' is not of type 'boolean'", "type": "schema"}
    ]
    missing = error_of(await http.post(inputs_url(run_id), json={}), 422, "invalid_input")
    assert "'ok' is a required property" in missing["message"]
    assert missing["details"][0]["loc"] == []  # the value itself lacks it
    await still_waiting(http, run_id, before["last_seq"])

    accepted = await http.post(inputs_url(run_id), json={"ok": True})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"run_id": run_id, "key": "approve", "status": "resumed"}
    assert await client.result(run_id, timeout=20) == {"doc": "draft.md", "ok": True}
    done = (await http.get(f"/v1/runs/{run_id}")).json()
    assert (done["status"], done["waiting_for"]) == ("completed", [])
    # A second answer is refused: the run waits for nothing any more.
    again = error_of(await http.post(inputs_url(run_id), json={"ok": False}), 409, "not_waiting")
    assert again["details"] == {"status": "completed", "waiting_for": []}


async def test_input_for_another_key_is_409_naming_what_it_waits_for(
    review_worker: Worker, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    run_id = await start_waiting_review(client, "other.md")
    before = await still_waiting(http, run_id)
    error = error_of(await http.post(inputs_url(run_id, "reject"), json={"ok": True}), 409, "not_waiting")
    assert "not waiting for input 'reject'" in error["message"]
    assert "it waits for approve" in error["message"]
    assert error["details"] == {"status": "waiting", "waiting_for": ["approve"]}
    await still_waiting(http, run_id, before["last_seq"])
    # The async client raises the same error as a ClientError.
    with pytest.raises(ClientError) as refused:
        await client.send_input(run_id, "reject", {"ok": True})
    assert (refused.value.status, refused.value.code) == (409, "not_waiting")
    assert await client.send_input(run_id, "approve", Approval(ok=False)) == {
        "run_id": run_id,
        "key": "approve",
        "status": "resumed",
    }
    assert await client.result(run_id, timeout=20) == {"doc": "other.md", "ok": False}


async def test_input_to_a_completed_run_is_409(http: httpx.AsyncClient) -> None:
    run = (await http.post("/v1/workflows/noop3/runs", params={"wait": 20}, json={})).json()
    assert run["status"] == "completed"
    assert run["waiting_for"] == []
    error = error_of(await http.post(inputs_url(run["run_id"]), json={"ok": True}), 409, "not_waiting")
    assert "not waiting for input 'approve'" in error["message"]
    assert error["details"] == {"status": "completed", "waiting_for": []}


async def test_bad_requests_leave_the_run_waiting(
    review_worker: Worker, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    run_id = await start_waiting_review(client, "bad.md")
    before = await still_waiting(http, run_id)
    json_type = {"Content-Type": "application/json"}
    bad_json = error_of(await http.post(inputs_url(run_id), content=b'{"ok": tru', headers=json_type), 400)
    assert bad_json["code"] == "invalid_json"
    assert "not valid JSON" in bad_json["message"]
    empty = error_of(await http.post(inputs_url(run_id), content=b"", headers=json_type), 400, "invalid_json")
    assert "empty" in empty["message"]
    nan = error_of(
        await http.post(inputs_url(run_id), content=b"NaN", headers=json_type), 400, "invalid_json"
    )
    assert "NaN" in nan["message"]
    deep = b"[" * 101 + b"]" * 101
    too_deep = error_of(await http.post(inputs_url(run_id), content=deep, headers=json_type), 400)
    assert "nested deeper than 100 levels" in too_deep["message"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong_type = error_of(await http.post(inputs_url(run_id), content=b'{"ok": true}', headers=form), 415)
    assert "application/json" in wrong_type["message"]
    for key in ("has%20space", "k" * 129):
        error_of(await http.post(inputs_url(run_id, key), json={"ok": True}), 422, "validation_error")
    error_of(await http.post(inputs_url("nope"), json={"ok": True}), 404, "run_not_found")
    await still_waiting(http, run_id, before["last_seq"])
    # A JSON body without a Content-Type header is accepted (curl --data-binary sends one, not all do).
    accepted = await http.post(inputs_url(run_id), content=b'{"ok": true}')
    assert (accepted.status_code, accepted.json()["status"]) == (202, "resumed")
    assert await client.result(run_id, timeout=20) == {"doc": "bad.md", "ok": True}


async def test_another_tenant_cannot_supply_input(review_worker: Worker, servers: Servers) -> None:
    base = servers.keyed.base_url
    async with AsyncClient(base, "key-a", reconnect_for=20) as a, AsyncClient(base, "key-b") as b:
        run_id = await start_waiting_review(a, "tenant.md")
        with pytest.raises(ClientError) as denied:
            await b.send_input(run_id, "approve", {"ok": True})
        assert (denied.value.status, denied.value.code) == (404, "run_not_found")
        assert (await a.get(run_id)).status == "waiting"
        assert (await a.send_input(run_id, "approve", {"ok": True}))["status"] == "resumed"
        assert await a.result(run_id, timeout=20) == {"doc": "tenant.md", "ok": True}


def test_sync_client_send_input_errors(api: ApiServer) -> None:
    with Client(api.base_url) as client:
        with pytest.raises(ClientError) as unknown:
            client.send_input(f"nope-{uuid.uuid4().hex}", "approve", {"ok": True})
        assert (unknown.value.status, unknown.value.code) == (404, "run_not_found")
        done = client.start("noop3", {"x": 1}, wait=20)
        assert done.status == "completed"
        with pytest.raises(ClientError) as refused:
            client.send_input(done.run_id, "approve", None)
        assert (refused.value.status, refused.value.code) == (409, "not_waiting")


async def test_a_secret_input_is_flagged_and_never_shown(
    review_worker: Worker, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    run = await client.start("sign_in", {}, version=VERSION)
    await until_waiting(client, run.run_id)
    [wait] = (await http.get(f"/v1/runs/{run.run_id}")).json()["waiting_for"]
    assert (wait["key"], wait["secret"]) == ("token", True)  # a UI renders a password field
    token = "sk-live-0123456789"
    response = await http.post(inputs_url(run.run_id, "token"), json=token)
    assert response.status_code == 202
    assert await client.result(run.run_id, timeout=20) == len(token)
    listing = (await http.get(f"/v1/runs/{run.run_id}/events", params={"follow": "false"})).text
    assert token not in listing
    assert '"value":"[secret]"' in listing
    assert (await http.get(f"/v1/runs/{run.run_id}")).json()["status_message"] == "signed in with [secret]"
