"""Secured Redis: Outlast's worker, API and dispatcher under a restricted ACL user, and TLS.

The ACL user is the one docs/deploy.md documents (the line is read from the doc): the test runs
every kind of Redis work Outlast does under it (see secured_app.py) in real worker and API
processes, then reads the server's ``ACL LOG``, which records every command the user was denied.
"""

from __future__ import annotations

# Not cluster-marked: each test starts its own Valkey with an ACL file (one server).
import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

import outlast
from outlast.control import Dispatcher
from outlast.control.registry import register_workflows
from outlast.errors import StoreUnavailable
from outlast.events import Event
from outlast.llm.simulator import SimulatorServer
from outlast.store.client import redis_from_url
from outlast.store.connect import connect
from outlast.store.embedded import EmbeddedServer

from ..api.support import CLI, ApiServer, Proc, child_env, read_sse, until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
APP = str(Path(__file__).with_name("secured_app.py"))
PASSWORD = "s3cret-pw"


def documented_acl_line() -> str:
    """The ACL line docs/deploy.md tells operators to use, with this test's password."""
    (line,) = re.findall(r"^user outlast on .*$", (ROOT / "docs" / "deploy.md").read_text(), re.M)
    assert ">CHANGE-ME" in line
    return line.replace(">CHANGE-ME", f">{PASSWORD}")


@dataclass
class Secured:
    server: EmbeddedServer
    url: str  # as the restricted user
    admin_url: str


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default on nopass -@all +ping\n"  # the readiness probe's PING, nothing else
        "user admin on >admin-pw ~* &* +@all\n" + documented_acl_line() + "\n"
    )
    server = EmbeddedServer(tmp_path / "data", extra_args=["--aclfile", str(acl)])
    server.start()
    try:
        yield Secured(
            server, f"redis://outlast:{PASSWORD}@127.0.0.1:{server.port}/0",
            f"redis://admin:admin-pw@127.0.0.1:{server.port}/0",
        )  # fmt: skip
    finally:
        server.stop()


@pytest.fixture
async def admin(secured: Secured) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(secured.admin_url)
    yield client
    await client.aclose()


def spawn_worker(url: str, env: dict[str, str], *args: str) -> Proc:
    cmd = [sys.executable, "-c", CLI, "worker", APP, "--redis", url, "--heartbeat", "0.2",
           "--lease-timeout", "1", *args]  # fmt: skip
    proc = Proc(cmd, env, b"worker ")
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()  # its output pipe closed too: nothing left behind for a later test to trip on
        raise
    return proc


@outlast.workflow
async def blue() -> None:
    """A workflow of version v2 (promoted and rolled back; never run)."""


async def denied(admin: aioredis.Redis) -> list[str]:
    """What the server refused the restricted user (ACL LOG), as ``reason object`` lines."""
    entries = await admin.acl_log()
    return [f"{e['reason']} {e['object']} (user {e['username']})" for e in entries]


async def test_worker_api_and_dispatcher_need_only_the_documented_acl(
    secured: Secured, admin: aioredis.Redis
) -> None:
    with SimulatorServer(seed=11, api_keys=["sk-test"]) as sim:
        env = child_env(secured.url, ADMIN_REDIS_URL=secured.admin_url, SIM_BASE_URL=sim.base_url)
        first = spawn_worker(secured.url, env)
        api = ApiServer(secured.url)
        procs = [first]
        try:
            api.proc.wait_ready()
            async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
                started = await http.post("/v1/workflows/flow/runs", json={"input": {"tag": "acl"},
                                          "idempotency_key": "acl-1"})  # fmt: skip
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]
                stream = asyncio.create_task(read_sse(http, f"/v1/runs/{run_id}/events"))

                async def waits_for_input() -> bool:
                    snapshot = (await http.get(f"/v1/runs/{run_id}")).json()
                    return bool(snapshot.get("waiting_for"))

                await until(waits_for_input, what="the run to ask for input")
                sent = await http.post(f"/v1/runs/{run_id}/inputs/approve", json={"ok": True})
                assert sent.status_code == 202, sent.text

                await until(lambda: _gate_started(http, run_id), timeout=30, what="the run to reach its gate")
                first.stop(signal.SIGKILL)  # a takeover, by a worker launching `outlast execute`
                await admin.lpush("gate:acl", "go")
                procs.append(spawn_worker(secured.url, env, "--launcher", "subprocess"))
                events: list[Event] = await asyncio.wait_for(stream, 60)
                assert events[-1].type == "run.completed", events[-1]
                assert events[-1].data["result"] == {"first": 2, "ok": True, "child": 10, "gate": "open"}
                assert {e.attempt for e in events if e.type == "run.started"} >= {1, 2, 3}
                for path in ("/v1/runs", f"/v1/runs/{run_id}/trace", "/v1/workflows", "/metrics"):
                    assert (await http.get(path)).status_code == 200, path

            # The dispatcher (in this process) under the same user: start, cancel, deploy, result.
            async with connect(secured.url) as client:
                dispatcher = Dispatcher(client)
                parked = (await dispatcher.start("parked", {"tag": "never"})).run_id
                assert (await dispatcher.cancel(parked)).status in ("cancelled", "cancelling")
                await register_workflows(client, "v2", [blue])  # as a worker of v2 does at start
                assert await dispatcher.promote("v2") == "dev"
                assert await dispatcher.rollback() == "dev"
                assert (await dispatcher.deploy_status())["active"] == "dev"
                assert await dispatcher.workers()
                assert (await dispatcher.result(run_id, timeout=5))["child"] == 10
        finally:
            for proc in procs:
                proc.stop()
            api.stop()
            refused = await denied(admin)  # (what was refused explains whatever failed first)
            logs = f"ACL LOG: {refused}\nworker: {first.output[-2000:]}\napi: {api.proc.output[-2000:]}"
    assert refused == [], logs


async def _gate_started(http: httpx.AsyncClient, run_id: str) -> bool:
    trace = (await http.get(f"/v1/runs/{run_id}/trace")).json()
    return any(span["name"] == "gate" for span in trace["spans"])


async def test_the_restricted_user_cannot_touch_anything_else(
    secured: Secured, admin: aioredis.Redis
) -> None:
    client = redis_from_url(secured.url)
    try:
        assert await client.ping()
        for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("GET", "other:key"),
                        ("SET", "app:key", "1"), ("PUBLISH", "other", "x"), ("SHUTDOWN",)):  # fmt: skip
            with pytest.raises(redis_errors.NoPermissionError):
                await client.execute_command(*command)
    finally:
        await client.aclose()
    assert len(await denied(admin)) == 7


async def test_wrong_credentials_are_a_clear_error_without_the_password(secured: Secured) -> None:
    bad = secured.url.replace(PASSWORD, "wrong-pw")
    with pytest.raises(StoreUnavailable) as caught:
        async with connect(bad):
            pass
    assert "wrong-pw" not in str(caught.value)
    assert (
        "invalid username-password" in str(caught.value).lower() or "wrongpass" in str(caught.value).lower()
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "workers", "--redis", bad, env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"Traceback" not in err
    assert b"wrong-pw" not in out + err
    assert b"refused the credentials" in err
    assert b"outlast:***@" in err
