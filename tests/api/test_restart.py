"""The API is stateless: restart it mid-stream and clients lose nothing; replicas agree."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse

from outlast.client import AsyncClient
from outlast.events import Event

from .conftest import Servers
from .support import ApiServer, assert_exactly_once, read_sse


async def sse_resuming_reader(base_url: str, path: str, progress: asyncio.Event) -> list[Event]:
    """An EventSource-like reader: on any failure, reconnect with Last-Event-ID."""
    events: list[Event] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while not events or not events[-1].terminal:
            headers = {"Last-Event-ID": str(events[-1].seq)} if events else {}
            try:
                async with aconnect_sse(http, "GET", path, headers=headers) as source:
                    async for sse in source.aiter_sse():
                        if sse.data:
                            events.append(Event.model_validate_json(sse.data))
                            if events[-1].seq >= 100:
                                progress.set()
            except httpx.TransportError:
                await asyncio.sleep(0.05)  # the server is down: EventSource waits `retry` ms too
    return events


async def ndjson_resuming_reader(base_url: str, path: str, progress: asyncio.Event) -> list[Event]:
    """A page-like reader that keeps its own cursor and resumes with ?after=."""
    events: list[Event] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while not events or not events[-1].terminal:
            params = {"after": events[-1].seq if events else 0}
            try:
                headers = {"Accept": "application/x-ndjson"}
                async with http.stream("GET", path, params=params, headers=headers) as response:
                    async for line in response.aiter_lines():
                        if line:
                            events.append(Event.model_validate_json(line))
                            if events[-1].seq >= 100:
                                progress.set()
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    return events


@pytest.fixture
def own_api(servers: Servers) -> Iterator[ApiServer]:
    server = ApiServer(servers.redis_url)
    server.proc.wait_ready()
    yield server
    server.stop()


@pytest.mark.timeout(120)
async def test_restart_mid_stream_loses_nothing(own_api: ApiServer, store_redis: aioredis.Redis) -> None:
    gate = f"gate:{uuid.uuid4().hex}"
    async with AsyncClient(own_api.base_url, reconnect_for=30) as client:
        run = await client.start("ticks", {"n": 400, "gate": gate, "pause": 200})
        path = f"/v1/runs/{run.run_id}/events"
        progress = [asyncio.Event() for _ in range(3)]

        async def via_client() -> list[Event]:
            events = []
            async for event in client.events(run.run_id):
                events.append(event)
                if event.seq >= 100:
                    progress[2].set()
            return events

        readers = [
            asyncio.create_task(sse_resuming_reader(own_api.base_url, path, progress[0])),
            asyncio.create_task(ndjson_resuming_reader(own_api.base_url, path, progress[1])),
            asyncio.create_task(via_client()),
        ]
        for p in progress:
            await p.wait()
        own_api.proc.stop(signal.SIGKILL)  # a crash: no goodbye to anyone
        own_api.restart()
        await asyncio.to_thread(own_api.proc.wait_ready)
        await store_redis.rpush(gate, 1)
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    for events in results:
        assert_exactly_once(events, 405)


@pytest.fixture(scope="module")
def replica(servers: Servers) -> Iterator[ApiServer]:
    server = ApiServer(servers.redis_url)
    server.proc.wait_ready()
    yield server
    server.stop()


async def test_two_api_processes_give_identical_answers(api: ApiServer, replica: ApiServer) -> None:
    async with (
        httpx.AsyncClient(base_url=api.base_url, timeout=30) as a,
        httpx.AsyncClient(base_url=replica.base_url, timeout=30) as b,
    ):
        started = (
            await a.post("/v1/workflows/greet/runs", json={"input": {"name": "ed", "times": 2}})
        ).json()
        run_id = started["run_id"]
        # Started on A, followed to the end on B.
        events_b = await read_sse(b, started["events_url"])
        assert_exactly_once(events_b)
        for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/trace", "/v1/workflows", "/v1/runs?limit=20"):
            ra, rb = await a.get(path), await b.get(path)
            assert (ra.status_code, ra.json()) == (rb.status_code, rb.json()), path
        history = f"/v1/runs/{run_id}/events?follow=false"
        assert (await a.get(history)).text.split("\n\n")[1:] == (await b.get(history)).text.split("\n\n")[1:]
        # A run started on B, cancelled on A once running; then the same 409 from both.
        gate = f"gate:{uuid.uuid4().hex}"
        other = (await b.post("/v1/workflows/ticks/runs", json={"input": {"n": 1, "gate": gate}})).json()
        async with aconnect_sse(a, "GET", other["events_url"]) as source:
            async for sse in source.aiter_sse():
                if sse.event == "step.started":  # inside the gated step
                    break
        assert (await a.post(f"/v1/runs/{other['run_id']}/cancel")).status_code == 202
        assert (await read_sse(b, other["events_url"]))[-1].type == "run.cancelled"
        url = f"/v1/runs/{other['run_id']}/cancel"
        ca, cb = await a.post(url), await b.post(url)
        assert ca.status_code == cb.status_code == 409
        assert ca.json() == cb.json()
