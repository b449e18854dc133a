"""Start → stream → result over HTTP (SSE, NDJSON, ?wait=), and the run endpoints."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse

from outlast.client import AsyncClient
from outlast.errors import RunFailed
from outlast.events import Event
from outlast.store import keys
from outlast.store.base import NewRun
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.store.queue import RunQueue

from .conftest import Servers
from .support import ApiServer, assert_exactly_once, read_sse, spawn_worker


def gate() -> str:
    return f"gate:{uuid.uuid4().hex}"


async def test_start_and_stream_sse_in_the_same_response(http: httpx.AsyncClient) -> None:
    body = {"input": {"name": "ada", "times": 2}}
    events: list[Event] = []
    async with aconnect_sse(http, "POST", "/v1/workflows/greet/runs", json=body) as source:
        response = source.response
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        run_id = response.headers["x-outlast-run-id"]
        async for sse in source.aiter_sse():
            if sse.data:
                event = Event.model_validate_json(sse.data)
                assert (sse.id, sse.event) == (str(event.seq), event.type)
                events.append(event)
    assert_exactly_once(events)
    assert events[0].type == "run.queued"
    assert events[-1].type == "run.completed"
    assert events[-1].data["result"] == {"text": "hello ada", "times": 2}
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert (run["status"], run["last_seq"]) == ("completed", events[-1].seq)


async def test_start_and_stream_ndjson(http: httpx.AsyncClient) -> None:
    headers = {"Accept": "application/x-ndjson"}
    async with http.stream(
        "POST", "/v1/workflows/noop3/runs", json={"input": {"x": 7}}, headers=headers
    ) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        events = [Event.model_validate_json(line) async for line in r.aiter_lines() if line.strip()]
    assert_exactly_once(events)
    assert events[-1].data["result"] == 7


async def test_wait_returns_the_finished_run(http: httpx.AsyncClient) -> None:
    body = {"input": {"name": "bo", "times": 2, "token": "hunter2-but-long"}}
    response = await http.post("/v1/workflows/greet/runs", params={"wait": 20}, json=body)
    assert response.status_code == 200
    run = response.json()
    assert run["status"] == "completed"
    assert run["result"] == {"text": "hello bo", "times": 2}
    assert run["input"]["token"] == "[secret]"  # stored unmasked for the worker, never shown
    assert run["objects"] == {"greeting": {"name": "bo", "count": 2}}
    assert run["progress"] == {"done": 2, "total": 2, "label": None}
    assert run["status_message"] == "greeting bo"


async def test_wait_that_runs_out_answers_202(http: httpx.AsyncClient, store_redis: aioredis.Redis) -> None:
    g = gate()
    body = {"input": {"n": 3, "gate": g}}
    response = await http.post("/v1/workflows/ticks/runs", params={"wait": 0.2}, json=body)
    assert response.status_code == 202
    started = response.json()
    assert started["status"] in ("queued", "running")
    assert started["events_url"] == f"/v1/runs/{started['run_id']}/events"
    await store_redis.rpush(g, 1)
    async with AsyncClient(str(http.base_url)) as client:
        assert await client.result(started["run_id"], timeout=20) == 3


async def test_snapshot_then_stream_after_last_seq_rebuilds_objects(
    http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    g = gate()
    body = {"input": {"name": "cy", "times": 3, "gate": g}}
    run_id = (await http.post("/v1/workflows/greet/runs", json=body)).json()["run_id"]
    async with aconnect_sse(http, "GET", f"/v1/runs/{run_id}/events") as source:
        async for sse in source.aiter_sse():  # the first object is out; the run waits at the gate
            if sse.event == "step.started":
                break
    snapshot = (await http.get(f"/v1/runs/{run_id}")).json()
    assert snapshot["status"] == "running"
    objects = snapshot["objects"]
    assert objects == {"greeting": {"name": "cy", "count": 0}}
    await store_redis.rpush(g, 1)
    events = await read_sse(http, f"/v1/runs/{run_id}/events", params={"after": snapshot["last_seq"]})
    assert events[0].seq == snapshot["last_seq"] + 1
    for event in events:
        if event.type == "object":
            name = event.data["name"]
            objects[name] = jsonpatch.apply_patch(objects.get(name), event.data["patch"])
    final = (await http.get(f"/v1/runs/{run_id}")).json()
    assert final["status"] == "completed"
    assert objects == final["objects"] == {"greeting": {"name": "cy", "count": 3}}


async def test_list_runs_pages_newest_first_and_filters(servers: Servers) -> None:
    async with AsyncClient(servers.keyed.base_url, "key-list") as client:
        ids = [(await client.start("noop3", {"x": i}, wait=20)).run_id for i in range(5)]
        failed = await client.start("fails", {}, wait=20)
        assert failed.status == "failed"
        seen: list[str] = []
        page = await client.list_runs(limit=2)
        while True:
            assert len(page.runs) <= 2
            seen += [r.run_id for r in page.runs]
            if page.next_cursor is None:
                break
            page = await client.list_runs(limit=2, cursor=page.next_cursor)
        assert seen == [failed.run_id, *reversed(ids)]
        only_failed = await client.list_runs(status="failed")
        assert [r.run_id for r in only_failed.runs] == [failed.run_id]
        noops = await client.list_runs(workflow="noop3", status="completed", limit=50)
        assert [r.run_id for r in noops.runs] == list(reversed(ids))
        assert noops.next_cursor is None


async def test_cancel_a_running_run_then_409(http: httpx.AsyncClient, client: AsyncClient) -> None:
    run = await client.start("ticks", {"n": 3, "gate": gate()})
    async with aconnect_sse(http, "GET", f"/v1/runs/{run.run_id}/events") as source:
        async for sse in source.aiter_sse():  # wait until the worker is inside the gated step
            if sse.event == "step.started":
                break
    response = await http.post(f"/v1/runs/{run.run_id}/cancel")
    assert (response.status_code, response.json()["status"]) == (202, "cancelling")
    with pytest.raises(RunFailed) as failed:
        await client.result(run.run_id, timeout=20)
    assert failed.value.status == "cancelled"
    again = await http.post(f"/v1/runs/{run.run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_finished"
    assert again.json()["error"]["details"] == {"status": "cancelled"}


async def test_versions_listed_and_a_queued_run_cancels_at_once(
    servers: Servers, http: httpx.AsyncClient
) -> None:
    burst = spawn_worker(servers.redis_url, "--version", "v2", "--burst")
    try:
        burst.wait_ready()  # registered v2's workflows; exits as there is nothing to do
    finally:
        burst.stop()
    listing = (await http.get("/v1/workflows")).json()
    assert listing["active_version"] == "dev"
    assert {"dev", "v2"} <= set(listing["versions"])
    greet = next(w for w in listing["workflows"] if w["name"] == "greet")
    assert greet["version"] == "dev"
    assert {"dev", "v2"} <= set(greet["versions"])
    assert greet["secret_args"] == ["token"]
    assert greet["input_schema"]["required"] == ["name"]
    started = (await http.post("/v1/workflows/noop3/runs", json={"input": {}, "version": "v2"})).json()
    response = await http.post(f"/v1/runs/{started['run_id']}/cancel")  # no v2 worker runs it
    assert (response.status_code, response.json()["status"]) == (202, "cancelled")
    run = (await http.get(f"/v1/runs/{started['run_id']}")).json()
    assert (run["status"], run["version"]) == ("cancelled", "v2")


async def test_trace_and_metrics(http: httpx.AsyncClient, client: AsyncClient) -> None:
    run = await client.start("greet", {"name": "di", "times": 2}, wait=20)
    trace = (await http.get(f"/v1/runs/{run.run_id}/trace")).json()
    assert [s["name"] for s in trace["spans"]] == ["noop", "noop"]
    assert all(s["status"] == "completed" for s in trace["spans"])
    text = (await http.get("/metrics")).text
    assert 'outlast_api_runs_started_total{workflow="greet"}' in text
    assert "outlast_api_feeds_active" in text
    assert 'outlast_api_streams_active{format="sse"}' in text
    assert 'route="/v1/workflows/{name}/runs",status="200"' in text
    assert json.loads((await http.get("/healthz")).text) == {"status": "ok"}


async def test_a_tenants_listing_reads_only_its_own_run_index(tmp_path: Path) -> None:
    """~900 other-tenant runs newer than this tenant's: its listing reads its own index only, so
    it neither scans their entries nor hands out a cursor holding one of their run ids."""
    valkey = EmbeddedServer(tmp_path / "valkey").start()
    api = ApiServer(valkey.url, api_keys={"k-mine": "mine", "k-other": "other"})
    redis = redis_from_url(valkey.url)
    try:
        queue = RunQueue(redis)  # the real START script; version "nobody" has no worker: runs stay queued
        mine: list[str] = []
        for i in range(3):
            mine.append(f"mine-{i}")
            await queue.enqueue(
                NewRun(f"mine-{i}", "w", {}, version="nobody", tenant="mine"), b"{}", "nobody"
            )
            for j in range(300):
                run = NewRun(f"other-{i}-{j}", "w", {}, version="nobody", tenant="other")
                await queue.enqueue(run, b"{}", "nobody")
        assert await redis.zrevrange(keys.tenant_runs_index("mine"), 0, -1) == [
            m.encode() for m in mine[::-1]
        ]
        assert await redis.zcard(keys.tenant_runs_index("other")) == 900
        assert await redis.zcard(keys.RUNS_INDEX) == 903
        api.proc.wait_ready()
        reads_before = await _hmget_calls(redis)
        async with AsyncClient(api.base_url, "k-mine") as client:
            first = await client.list_runs(limit=2)
            assert [r.run_id for r in first.runs] == ["mine-2", "mine-1"]
            assert first.next_cursor is not None
            cursor = base64.urlsafe_b64decode(first.next_cursor + "==").decode()
            assert cursor.endswith(":mine-1"), cursor
            rest = await client.list_runs(limit=2, cursor=first.next_cursor)
            assert ([r.run_id for r in rest.runs], rest.next_cursor) == (["mine-0"], None)
        # One HMGET per summary read (plus the API's own): not one per foreign entry.
        assert await _hmget_calls(redis) - reads_before < 20
    finally:
        api.stop()
        await redis.aclose()
        valkey.stop()


async def _hmget_calls(redis: aioredis.Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))
