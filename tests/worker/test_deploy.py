"""Blue-green with real worker processes and the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store import keys
from outlast.store.commands import server_ms
from outlast.worker import Worker

from .app import gated, hang, multi, quick
from .conftest import APP, LEASE, SpawnWorker
from .test_faults import check_stream, events_of, wait_event

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


async def cli(redis_url: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from outlast.cli.main import main; main()", *args, "--redis", redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_blue_green_promote_drains_the_old_version(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis, redis_url: str
) -> None:
    blue = await spawn_worker(version="v1")
    old_runs = [(await dispatcher.start(gated, {"tag": f"old{n}"})).run_id for n in range(4)]
    for run_id in old_runs:  # each holds at its gate until the test opens it
        await wait_event(dispatcher, run_id, ev.STEP_COMPLETED)
    green = await spawn_worker(version="v2")
    assert "active version: v2 (was v1)" in await cli(redis_url, "deploy", "promote", "v2")
    new_runs = [
        (await dispatcher.start(multi, {"tag": f"new{n}", "steps": 2, "delay": 0})).run_id for n in range(4)
    ]
    status = json.loads(await cli(redis_url, "deploy", "status", "--json"))
    rows = {row["version"]: row for row in status["versions"]}
    assert status["active"] == "v2"
    assert rows["v1"]["state"] == "draining"
    assert rows["v1"]["in_flight"] >= 1
    assert rows["v1"]["workers"] == 1

    for run_id in new_runs:
        await dispatcher.result(run_id, timeout=30)
        events = await events_of(dispatcher, run_id)
        assert [e.data["worker"] for e in events if e.type == ev.RUN_STARTED] == [green.id]
        assert (await dispatcher.store.get_run(run_id)).version == "v2"
    status = json.loads(await cli(redis_url, "deploy", "status", "--json"))
    assert {row["version"]: row["in_flight"] for row in status["versions"]}["v1"] == 4
    for n in range(4):
        await redis.rpush(f"gate:old{n}", "go")
    for run_id in old_runs:
        assert await dispatcher.result(run_id, timeout=30) == "open"
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        assert [e.data["worker"] for e in events if e.type == ev.RUN_STARTED] == [blue.id]

    rows = {
        row["version"]: row
        for row in json.loads(await cli(redis_url, "deploy", "status", "--json"))["versions"]
    }
    assert (rows["v1"]["state"], rows["v1"]["in_flight"]) == ("drained", 0)
    blue.signal(signal.SIGTERM)
    assert await blue.wait() == 0
    table = await cli(redis_url, "workers")
    assert green.id in table
    assert blue.id not in table


async def test_a_cached_active_version_follows_promotions_made_elsewhere(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    cached = Dispatcher(redis, cache_active_version=True)
    try:
        assert await cached.active_version() is None
        assert cached._registry is not None
        await asyncio.wait_for(cached._registry.subscribed.wait(), 5)
        assert await cached.active_version() is None  # cached now
        await Worker([quick], redis, version="v1").run_until_idle()  # the first version: active
        await asyncio.wait_for(cached._registry.changed.wait(), 5)
        assert (await cached.start(quick, {"n": 1})).version == "v1"
        cached._registry.changed.clear()
        # Registrations are cached too, until a worker announces it registered again.
        assert await cached.workflow_info("v1", "quick") is not None
        await redis.hdel(keys.workflows_key("v1"), "quick")
        assert await cached.workflow_info("v1", "quick") is not None  # from memory
        cached._registry.changed.clear()
        await Worker([quick], redis, version="v1").run_until_idle()
        await asyncio.wait_for(cached._registry.changed.wait(), 5)
        assert (await cached.workflow_info("v1", "quick") or {})["name"] == "quick"
        cached._registry.changed.clear()
        await dispatcher.promote("v2", force=True)  # another process, before v2 workers start
        await asyncio.wait_for(cached._registry.changed.wait(), 5)
        assert (await cached.start(quick, {"n": 1})).version == "v2"
        cached._registry.changed.clear()
        await dispatcher.rollback()
        await asyncio.wait_for(cached._registry.changed.wait(), 5)
        assert await cached.active_version() == "v1"
    finally:
        await cached.aclose()


async def cli_fails(redis_url: str, *args: str) -> str:
    """Run the CLI expecting a one-line error and exit code 1; its stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from outlast.cli.main import main; main()", *args, "--redis", redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1, (out + err).decode()
    assert "Traceback" not in err.decode()
    return err.decode()


async def test_promote_and_workers_refuse_unknown_or_malformed_versions(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, redis_url: str
) -> None:
    del redis  # (requested for its flush: a clean database)
    await spawn_worker(version="v1")
    err = await cli_fails(redis_url, "deploy", "promote", "v9")
    assert "no worker has registered version 'v9' (known versions: v1)" in err
    assert "--force" in err
    for bad in ("", "has space", "a/b"):
        err = await cli_fails(redis_url, "deploy", "promote", bad)
        assert f"version {bad!r}: use 1-128 letters" in err
        err = await cli_fails(redis_url, "worker", APP, "--version", bad)
        assert f"version {bad!r}: use 1-128 letters" in err
    assert "active version: v1" in await cli(redis_url, "deploy", "status")
    assert "active version: v9 (was v1)" in await cli(redis_url, "deploy", "promote", "v9", "--force")


async def test_a_killed_workers_cancelled_run_leaves_its_version_drained(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis, redis_url: str
) -> None:
    blue = await spawn_worker(version="v1")
    run_id = (await dispatcher.start(hang, {"tag": "k"})).run_id
    await wait_event(dispatcher, run_id, ev.STATUS)
    await spawn_worker(version="v2")
    await dispatcher.promote("v2")
    blue.signal(signal.SIGKILL)
    await blue.wait()
    # Dropped from `workers` once it missed its heartbeats for its lease timeout (not 3 of them):
    # wait for exactly that much time past its last report, then it must be gone.
    last = json.loads(await redis.hget(keys.WORKERS, blue.id) or b"{}")
    assert last["lease_timeout"] == LEASE
    await asyncio.sleep(max(0.0, last["heartbeat_at"] + LEASE - time.time()) + 0.05)
    assert blue.id not in [w["id"] for w in await dispatcher.workers()]
    assert blue.id not in await cli(redis_url, "workers")
    # Its lease runs out on the server's clock (it may outlive the last report by a beat).
    left_ms = (await dispatcher.store.get_run(run_id)).lease_until - await server_ms(redis)
    await asyncio.sleep(max(0, left_ms + 5) / 1000)
    assert (await dispatcher.cancel(run_id)).status == "cancelled"  # nobody holds it: ended now
    rows = {
        row["version"]: row
        for row in json.loads(await cli(redis_url, "deploy", "status", "--json"))["versions"]
    }
    assert (rows["v1"]["workers"], rows["v1"]["in_flight"], rows["v1"]["state"]) == (0, 0, "drained")
