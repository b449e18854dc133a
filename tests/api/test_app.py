"""The app around the routes: /metrics auth, no trailing-slash redirects, offline /docs, the
OpenAPI stream schemas, and the bounded Redis pool."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse

from outlast.events import Event

from .conftest import Servers
from .support import ApiServer, assert_exactly_once, read_sse


async def test_metrics_need_a_key_or_the_metrics_token(servers: Servers) -> None:
    async with httpx.AsyncClient(base_url=servers.keyed.base_url) as http:
        refused = await http.get("/metrics")
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "missing_api_key")
        assert (await http.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        allowed = await http.get("/metrics", headers={"Authorization": "Bearer key-a"})
        assert allowed.status_code == 200
        assert "outlast_api_feeds_active" in allowed.text
    # With a metrics token, only the token reads them (an API key is a tenant's, not an operator's).
    api = ApiServer(servers.redis_url, api_keys={"key-m": "tenant-m"}, metrics_token="scrape-me")
    try:
        api.proc.wait_ready()
        async with httpx.AsyncClient(base_url=api.base_url) as http:
            for headers in ({}, {"Authorization": "Bearer key-m"}, {"Authorization": "Basic scrape-me"}):
                response = await http.get("/metrics", headers=headers)
                assert response.status_code == 401, headers
                assert response.json()["error"]["code"] in ("missing_metrics_token", "invalid_metrics_token")
            assert (
                await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            ).status_code == 200
    finally:
        api.stop()


def _raw_get(port: int, path: str, host: str = "evil.example") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(servers: Servers) -> None:
    for api in (servers.api, servers.keyed):  # before auth too
        for path in ("/v1/runs/", "/v1/runs/abc/", "/v1/workflows/", "/healthz/"):
            reply = _raw_get(api.port, path)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404"), head
            assert b"location:" not in head.lower()
            assert b"evil.example" not in reply
            assert b"paths take no trailing slash" in body


async def test_docs_load_from_the_api_itself(http: httpx.AsyncClient) -> None:
    """Swagger UI and ReDoc reference only their own origin (offline, no CDN), and it serves them."""
    for page in ("/docs", "/redoc"):
        html = (await http.get(page)).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html)
        assets = [a or b for a, b in urls]
        assert assets, html
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            response = await http.get(asset)
            assert response.status_code == 200, asset
            assert response.content
    assert "swagger-ui-bundle.js" in (await http.get("/docs")).text


async def test_openapi_describes_streams_as_event_envelopes(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    envelope = schema["components"]["schemas"]["EventEnvelope"]
    assert set(envelope["required"]) >= {"v", "seq", "type", "run_id", "attempt", "ts", "data"}
    stream_error = schema["components"]["schemas"]["StreamError"]
    assert "error" in stream_error["properties"]
    events = schema["paths"]["/v1/runs/{run_id}/events"]["get"]["responses"]
    for media in ("text/event-stream", "application/x-ndjson"):
        content = events["200"]["content"][media]
        assert content["schema"] == {"$ref": "#/components/schemas/EventEnvelope"}
    assert "204" in events
    start = schema["paths"]["/v1/workflows/{name}/runs"]["post"]["responses"]["200"]["content"]
    assert start["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/EventEnvelope"}


async def test_the_redis_pool_is_bounded_and_tails_take_turns(
    servers: Servers, store_redis: aioredis.Redis
) -> None:
    """More runs tailed than the pool has connections: the API never opens more than the cap
    (plus its multiplexed connection), and every stream still gets every seq once."""
    if servers.cluster:  # (redis-py's cluster pools cannot wait for a connection: no cap there)
        pytest.skip("a single server's bounded pool; on a cluster each node's pool is uncapped")
    name = f"api-pool-{uuid.uuid4().hex[:6]}"
    api = ApiServer(f"{servers.redis_url}?client_name={name}", env={"OUTLAST_API_MAX_CONNECTIONS": "4"})
    gate = f"gate:{uuid.uuid4().hex}"
    runs = 6
    try:
        api.proc.wait_ready()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            started = [
                (
                    await http.post(
                        "/v1/workflows/ticks/runs", json={"input": {"n": 3, "gate": gate, "pause": 1}}
                    )
                )
                for _ in range(runs)
            ]
            run_ids = [r.json()["run_id"] for r in started]
            attached = asyncio.Semaphore(0)

            async def reader(run_id: str) -> list[Event]:
                events: list[Event] = []
                async with aconnect_sse(http, "GET", f"/v1/runs/{run_id}/events") as source:
                    async for sse in source.aiter_sse():
                        if sse.data:
                            events.append(Event.model_validate_json(sse.data))
                            if events[-1].type == "custom":  # tick 0: the run now waits at the gate
                                attached.release()
                            if events[-1].terminal:
                                break
                return events

            tasks = [asyncio.create_task(reader(run_id)) for run_id in run_ids]
            for _ in range(runs):
                await attached.acquire()
            clients = await store_redis.client_list()
            assert len([c for c in clients if c.get("name") == name]) <= 4 + 1
            await store_redis.rpush(gate, *range(runs))
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for events in results:
                assert_exactly_once(events, 8)  # queued, started, tick, gate step x2, 2 ticks, completed
            assert await read_sse(http, f"/v1/runs/{run_ids[0]}/events") != []
        clients = await store_redis.client_list()
        assert len([c for c in clients if c.get("name") == name]) <= 4 + 1
    finally:
        api.stop()
