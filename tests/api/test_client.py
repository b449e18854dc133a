"""The Python client, sync and async, against the real server."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from outlast.client import AsyncClient, Client, ClientError
from outlast.errors import OutlastError, RunFailed

from .support import ApiServer


def test_sync_client_round_trip(api: ApiServer) -> None:
    with Client(api.base_url) as client:
        run = client.start("greet", {"name": "fe", "times": 2})
        assert (run.status, run.created) == ("queued", True)
        assert client.result(run.run_id, timeout=20) == {"text": "hello fe", "times": 2}
        events = list(client.events(run.run_id))
        assert [e.seq for e in events] == list(range(1, events[-1].seq + 1))
        assert events[-1].type == "run.completed"
        tail = list(client.events(run.run_id, after=events[-3].seq))
        assert [e.seq for e in tail] == [e.seq for e in events[-2:]]
        got = client.get(run.run_id)
        assert (got.status, got.terminal, got.objects) == (
            "completed",
            True,
            {"greeting": {"name": "fe", "count": 2}},
        )
        assert run.run_id in [r.run_id for r in client.list_runs(workflow="greet", limit=200).runs]
        assert {w["name"] for w in client.workflows()["workflows"]} >= {"greet", "noop3", "ticks", "fails"}
        with pytest.raises(RunFailed) as failed:
            client.result(client.start("fails", {"message": "nope"}).run_id, timeout=20)
        assert failed.value.status == "failed"
        assert "nope" in str(failed.value)


def test_sync_client_errors(api: ApiServer) -> None:
    with Client(api.base_url) as client:
        with pytest.raises(ClientError) as missing:
            client.get("no-such-run")
        assert (missing.value.status, missing.value.code) == (404, "run_not_found")
        with pytest.raises(ClientError) as invalid:
            client.start("greet", {"times": 1})
        assert invalid.value.status == 422
        assert invalid.value.details[0]["loc"] == ["input", "name"]
        assert isinstance(invalid.value, OutlastError)
    with Client("http://127.0.0.1:9", reconnect_for=0.1) as client, pytest.raises(ClientError) as down:
        client.get("x")
    assert (down.value.status, down.value.code) == (0, "unreachable")


async def test_async_client(api: ApiServer, store_redis: aioredis.Redis) -> None:
    async with AsyncClient(api.base_url) as client:
        finished = await client.start("noop3", {"x": 5}, wait=20)
        assert (finished.status, finished.result) == ("completed", 5)
        gate = f"gate:{uuid.uuid4().hex}"
        run = await client.start("ticks", {"n": 2, "gate": gate})
        with pytest.raises(TimeoutError):
            await client.result(run.run_id, timeout=0.3)
        await store_redis.rpush(gate, 1)
        assert await client.result(run.run_id, timeout=20) == 2
        spans = await client.trace(run.run_id)
        assert spans[0]["name"] == "wait_gate"
        with pytest.raises(ClientError) as ended:
            await client.cancel(run.run_id)
        assert ended.value.code == "run_finished"
        page = await client.list_runs(workflow="ticks", status="completed", limit=1)
        assert len(page.runs) == 1
        assert page.next_cursor is not None
