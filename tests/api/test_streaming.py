"""Resumable streams: drops, page refreshes, late joiners, gaps, keep-alives, fan-out."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse

from outlast import events as ev
from outlast import serde
from outlast.client import AsyncClient
from outlast.events import Event
from outlast.store.base import OP_META, AppendItem, NewRun
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore

from .support import ApiServer, ChaosProxy, assert_exactly_once, read_sse, until

N = 1000
LAST = N + 3  # run.queued, run.started, N ticks, run.completed


async def start_ticks(http: httpx.AsyncClient, n: int = N, **extra: object) -> str:
    response = await http.post("/v1/workflows/ticks/runs", json={"input": {"n": n, "every": 1, **extra}})
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def test_client_dropping_20_times_gets_every_seq_once(http: httpx.AsyncClient) -> None:
    run_id = await start_ticks(http)
    rng = random.Random(4)
    events: list[Event] = []
    drops = 0
    finished_before_last_drop = True
    while not events or not events[-1].terminal:
        headers = {"Last-Event-ID": str(events[-1].seq)} if events else {}
        stop_after = rng.randint(1, 60) if drops < 20 else None
        got = await read_sse(http, f"/v1/runs/{run_id}/events", stop_after=stop_after, headers=headers)
        events += got
        if stop_after is not None and not got[-1].terminal:
            drops += 1
            if drops == 20:
                status = (await http.get(f"/v1/runs/{run_id}")).json()["status"]
                finished_before_last_drop = status == "completed"
    assert drops == 20
    assert_exactly_once(events, LAST)
    assert not finished_before_last_drop, "the drops should happen while the run streams"


async def test_page_refresh_resumes_with_after(http: httpx.AsyncClient) -> None:
    run_id = await start_ticks(http)
    path = f"/v1/runs/{run_id}/events"
    first = await read_sse(http, path, stop_after=300)
    # A new EventSource after a refresh sends no Last-Event-ID: the page passes its cursor.
    rest = await read_sse(http, path, params={"after": first[-1].seq})
    assert_exactly_once(first + rest, LAST)


async def test_join_after_completion_replays_everything(http: httpx.AsyncClient, client: AsyncClient) -> None:
    run_id = await start_ticks(http, 200)
    await client.result(run_id, timeout=20)
    events = await read_sse(http, f"/v1/runs/{run_id}/events")
    assert_exactly_once(events, 203)
    async with http.stream(
        "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "application/x-ndjson"}
    ) as r:
        lines = [Event.model_validate_json(line) async for line in r.aiter_lines() if line]
    assert_exactly_once(lines, 203)
    # A finished run read at its end: 204, which tells EventSource to stop reconnecting (an empty
    # 200 makes it reconnect for ever), in either format, following or not.
    for accept in ("text/event-stream", "application/x-ndjson"):
        for follow in ("true", "false"):
            params = {"after": "203", "follow": follow}
            at_end = await http.get(f"/v1/runs/{run_id}/events", params=params, headers={"Accept": accept})
            assert (at_end.status_code, at_end.content) == (204, b""), at_end.text
            assert at_end.headers["x-outlast-run-id"] == run_id
        at_end = await http.get(
            f"/v1/runs/{run_id}/events", headers={"Accept": accept, "Last-Event-ID": "203"}
        )
        assert at_end.status_code == 204
    assert [e async for e in client.events(run_id, after=203)] == []  # the client stops at once too


async def test_async_client_resumes_through_20_cut_connections(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    proxy = ChaosProxy(api.port, drops=20, seed=11)
    base = await proxy.start()
    try:
        async with AsyncClient(base, reconnect_for=20) as client:
            run = await client.start("ticks", {"n": N, "every": 1})
            events = [e async for e in client.events(run.run_id)]
    finally:
        await proxy.close()
    assert proxy.cuts == 20
    assert_exactly_once(events, LAST)


async def test_many_readers_share_one_feed(
    api: ApiServer, http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    gate = f"gate:{uuid.uuid4().hex}"
    run_id = await start_ticks(http, 50, gate=gate, pause=10)
    readers = 200
    connected = asyncio.Semaphore(0)

    async def reader(client: httpx.AsyncClient) -> list[Event]:
        events: list[Event] = []
        async with aconnect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    events.append(Event.model_validate_json(sse.data))
                    if events[-1].seq == 12:  # the last event before the gate
                        connected.release()
                    if events[-1].terminal:
                        break
        return events

    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30, limits=limits) as many:
        tasks = [asyncio.create_task(reader(many)) for _ in range(readers)]
        for _ in range(readers):
            await connected.acquire()
        metrics = (await http.get("/metrics")).text
        assert float(_metric(metrics, 'outlast_api_streams_active{format="sse"}')) >= readers
        assert float(_metric(metrics, "outlast_api_feeds_active")) <= 3  # this run, plus stragglers
        await store_redis.rpush(gate, 1)
        results = await asyncio.gather(*tasks)
    for events in results:
        assert_exactly_once(events, 55)  # 50 ticks, the gate step's two events, queued/started/completed


def _metric(text: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return match.group(1)


async def test_trimmed_history_yields_a_gap_event(
    http: httpx.AsyncClient, client: AsyncClient, store_redis: aioredis.Redis
) -> None:
    run_id = await start_ticks(http, 50)
    await client.result(run_id, timeout=20)
    await store_redis.xtrim(run_keys(run_id).events, minid="0-20", approximate=False)
    events = await read_sse(http, f"/v1/runs/{run_id}/events", params={"after": 5})
    assert events[0].type == "stream.gap"
    assert (events[0].seq, events[0].data) == (19, {"from": 6, "to": 19})
    assert [e.seq for e in events[1:]] == list(range(20, 54))


async def test_keepalive_retry_and_follow_false(
    http: httpx.AsyncClient, api: ApiServer, store_redis: aioredis.Redis
) -> None:
    gate = f"gate:{uuid.uuid4().hex}"
    run_id = await start_ticks(http, 5, gate=gate, pause=2)
    path = f"/v1/runs/{run_id}/events"
    seen: list[str] = []
    async with http.stream("GET", path) as response:
        async for line in response.aiter_lines():
            seen.append(line)
            if line.startswith(": keep-alive"):
                break
    assert seen[0] == "retry: 100"
    async with http.stream("GET", path, headers={"Accept": "application/x-ndjson"}) as response:
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "":  # the NDJSON keep-alive
                break
    assert all(Event.model_validate_json(line).seq <= 5 for line in lines[:-1])
    history = await read_sse(http, path, params={"follow": "false"})
    assert history
    assert not history[-1].terminal
    await store_redis.rpush(gate, 1)
    assert_exactly_once(await read_sse(http, path), 10)


async def test_a_client_that_stops_reading_is_dropped(
    api: ApiServer, http: httpx.AsyncClient, client: AsyncClient
) -> None:
    # ~5 MB of history: more than the socket buffers between the server and a client that reads nothing.
    run_id = (await client.start("ticks", {"n": 20000})).run_id
    await client.result(run_id, timeout=30)
    metrics = "/metrics"
    before = float(_metric((await http.get(metrics)).text, 'outlast_api_streams_active{format="sse"}'))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window fills at once
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", api.port))
        await loop.sock_sendall(sock, f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())

        async def active() -> float:
            return float(_metric((await http.get(metrics)).text, 'outlast_api_streams_active{format="sse"}'))

        async def holding() -> bool:
            return await active() == before + 1

        async def dropped() -> bool:
            return await active() == before

        await until(holding, what="the stream to start")
        # The client reads nothing: the next keep-alive cannot be sent within send_timeout.
        await until(dropped, timeout=20, what="the server to drop the stalled stream")
    finally:
        sock.close()


# -- the store going away mid-stream ----------------------------------------------------------


class _Outage:
    """A private Valkey (the shared one must not be killed), an API on it, and one run whose events
    the test writes through the real store, as its worker would."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.valkey = EmbeddedServer(tmp_path / "valkey").start()
        self.api = ApiServer(self.valkey.url, **options)
        self.run_id = f"outage-{uuid.uuid4().hex[:8]}"
        self.redis = redis_from_url(self.valkey.url)
        self.store = RedisStore(self.redis)

    async def start(self) -> int:
        run = NewRun(run_id=self.run_id, workflow="w", input={})
        await self.store.create_run(run, run.queued_event())
        attempt = (await self.store.begin_attempt(self.run_id)).attempt
        await self.redis.execute_command("WAITAOF", 1, 0, 0)  # on disk: it survives a SIGKILL
        self.api.proc.wait_ready()
        return attempt

    async def append(self, attempt: int, seq: int, type: str, **meta: str) -> None:
        payload = serde.dumps(ev.envelope(
            seq=seq, type=type, run_id=self.run_id, attempt=attempt, step=None, ts=time.time(), data={}
        ))  # fmt: skip
        await self.store.append(self.run_id, attempt, [AppendItem(seq, payload, tuple(
            (OP_META, k, v) for k, v in meta.items()
        ))])  # fmt: skip

    async def close(self) -> None:
        self.api.stop()
        await self.redis.aclose()
        self.valkey.stop()


async def _stream_lines(base_url: str, path: str, accept: str, first: asyncio.Event) -> list[str]:
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        http.stream("GET", path, headers={"Accept": accept}) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if '"seq":1,' in line:
                first.set()
    return lines


async def test_a_store_that_stays_down_ends_the_stream_with_an_error_event(tmp_path: Path) -> None:
    outage = _Outage(tmp_path, store_retry=1.0)
    try:
        await outage.start()
        path = f"/v1/runs/{outage.run_id}/events"
        seen = [asyncio.Event(), asyncio.Event()]
        readers = [
            asyncio.create_task(_stream_lines(outage.api.base_url, path, accept, first))
            for accept, first in zip(("text/event-stream", "application/x-ndjson"), seen, strict=True)
        ]
        for first in seen:
            await asyncio.wait_for(first.wait(), 20)
        outage.valkey.kill()  # SIGKILL: the feeds' blocking reads break at once
        sse, ndjson = await asyncio.wait_for(asyncio.gather(*readers), 30)
    finally:
        await outage.close()
    # SSE: an `error` event (no id: Last-Event-ID stays at the last real seq), then the end.
    error_at = sse.index("event: error")
    error = json.loads(sse[error_at + 1].removeprefix("data: "))["error"]
    assert error["code"] == "store_unavailable"
    assert "the stream ended before the run did" in error["message"]
    assert not any(line.startswith("id:") for line in sse[error_at:])
    # NDJSON: an {"error": ...} line (an envelope never has that key) as its last line.
    last = json.loads([line for line in ndjson if line][-1])
    assert last["error"]["code"] == "store_unavailable"
    assert "store unreachable, retrying" in outage.api.proc.output


async def test_a_store_back_within_store_retry_loses_nothing(tmp_path: Path) -> None:
    outage = _Outage(tmp_path, store_retry=30.0)
    try:
        attempt = await outage.start()
        got: list[Event] = []
        path = f"/v1/runs/{outage.run_id}/events"
        async with (
            httpx.AsyncClient(base_url=outage.api.base_url, timeout=30) as http,
            aconnect_sse(http, "GET", path) as source,
        ):
            async for sse in source.aiter_sse():
                assert sse.event != "error", sse.data
                if not sse.data:
                    continue
                got.append(Event.model_validate_json(sse.data))
                if got[-1].seq == 1:
                    outage.valkey.kill()
                    outage.valkey.start()  # same port and data dir (AOF): the run is back
                    await outage.append(attempt, 2, ev.CUSTOM)
                    done = {"status": "completed", "finished_at": str(time.time())}
                    await outage.append(attempt, 3, ev.RUN_COMPLETED, **done)
                if got[-1].terminal:
                    break
    finally:
        await outage.close()
    assert_exactly_once(got, 3)
