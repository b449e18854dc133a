"""API keys map to tenants; a tenant cannot see, stream or cancel another tenant's runs."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis.asyncio as aioredis
import typer
from typer.testing import CliRunner

from outlast.api.auth import parse_api_keys
from outlast.cli.api import is_loopback, register
from outlast.client import AsyncClient, ClientError
from outlast.errors import ConfigError
from outlast.store import keys

from .conftest import KEYS, Servers
from .support import read_sse, until


async def test_tenants_are_isolated(servers: Servers) -> None:
    base = servers.keyed.base_url
    async with AsyncClient(base, "key-a") as a, AsyncClient(base, "key-b") as b:
        run = await a.start("ticks", {"n": 2, "gate": f"gate:{uuid.uuid4().hex}"})
        for call in (b.get, b.cancel, b.trace):
            with pytest.raises(ClientError) as denied:
                await call(run.run_id)
            assert (denied.value.status, denied.value.code) == (404, "run_not_found")
        with pytest.raises(ClientError) as denied:
            await anext(b.events(run.run_id))
        assert denied.value.status == 404
        assert run.run_id not in [r.run_id for r in (await b.list_runs(limit=200)).runs]
        assert run.run_id in [r.run_id for r in (await a.list_runs(limit=200)).runs]
        # EventSource's ?token= is the same key, with the same tenancy.
        async with httpx.AsyncClient(base_url=base) as http:
            events_url = f"/v1/runs/{run.run_id}/events"
            as_b = await http.get(events_url, params={"token": "key-b"})
            assert as_b.status_code == 404
            history = await read_sse(http, events_url, params={"token": "key-a", "follow": "false"})
            assert history[0].type == "run.queued"
        assert (await a.cancel(run.run_id)).status in ("cancelled", "cancelling")
        # One tenant's idempotency key never returns another tenant's run.
        key = f"idem-{uuid.uuid4().hex}"
        ra = await a.start("noop3", {"x": 1}, idempotency_key=key)
        rb = await b.start("noop3", {"x": 1}, idempotency_key=key)
        assert ra.run_id != rb.run_id
        assert (await a.start("noop3", {"x": 1}, idempotency_key=key)).run_id == ra.run_id
    logs = servers.keyed.proc.output
    assert "token=[redacted]" in logs
    assert not any(k in logs for k in KEYS), "an API key reached the log"


def test_parse_api_keys() -> None:
    assert parse_api_keys("k1:a, k2:b\n# comment\nk:3:c") == {"k1": "a", "k2": "b", "k:3": "c"}
    for bad in ("justakey", "k1:a,k1:b", "k:", ":t", "k:bad tenant"):
        with pytest.raises(ConfigError):
            parse_api_keys(bad)


def test_open_mode_refuses_a_public_address() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps `api` a named subcommand
        """Unused."""

    env = {"OUTLAST_API_KEYS": "", "OUTLAST_API_KEYS_FILE": ""}
    result = CliRunner().invoke(
        app, ["api", "--host", "0.0.0.0", "--redis", "redis://127.0.0.1:1/0"], env=env
    )
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in " ".join(result.output.split())
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")


async def test_a_percent_encoded_token_name_is_redacted_too(servers: Servers) -> None:
    """``?%74oken=KEY`` authenticates like ``?token=KEY``: the access log must hide it as well."""
    base = servers.keyed.base_url
    async with AsyncClient(base, "key-b") as b, httpx.AsyncClient(base_url=base) as http:
        run = await b.start("noop3", {}, wait=20)
        path = f"/v1/runs/{run.run_id}/events"
        for name in ("%74oken", "toke%6E", "%74%6F%6B%65%6E", "t%6Fken"):
            response = await http.get(f"{path}?follow=false&{name}=key-b")
            assert response.status_code == 200, (name, response.text)  # it did authenticate

        async def logged() -> bool:
            return servers.keyed.proc.output.count(path) >= 4

        await until(logged, what="the access log lines")
    lines = [line for line in servers.keyed.proc.output.splitlines() if path in line]
    assert all("=[redacted]" in line for line in lines), lines
    assert not any("key-b" in line for line in lines), "an API key reached the log"


async def test_fairness_keys_are_per_tenant(servers: Servers, store_redis: aioredis.Redis) -> None:
    """A tenant's runs queue fairly behind its own name unless it names a key, and a key it names
    is scoped to it (as idempotency keys are): no tenant can join or cap another's queue."""
    async with AsyncClient(servers.keyed.base_url, "key-a") as a:
        default = await a.start("noop3", {"x": 1})
        named = await a.start("noop3", {"x": 2}, fairness_key="batch", max_concurrency=5)
        for run in (default, named):
            assert (await a.result(run.run_id, timeout=30)) is not None
    meta = [await store_redis.hget(keys.run_keys(r.run_id).meta, "fairness_key") for r in (default, named)]
    assert meta == [b"tenant-a", b"t8:tenant-a:batch"]
    async with AsyncClient(servers.api.base_url) as open_mode:
        with pytest.raises(ClientError) as refused:
            await open_mode.start("noop3", {"x": 3}, max_concurrency=2)
        assert (refused.value.status, refused.value.code) == (422, "invalid_request")
        plain = await open_mode.start("noop3", {"x": 4})  # no tenant, no key: straight to the stream
        await open_mode.result(plain.run_id, timeout=30)
    assert await store_redis.hget(keys.run_keys(plain.run_id).meta, "fairness_key") is None
