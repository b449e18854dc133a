"""Pluggable compute: each run in its own `outlast execute` process, handed only the run id."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher

from .app import gated, multi
from .conftest import APP, SpawnWorker
from .test_faults import check_stream, events_of, wait_event

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


async def test_subprocess_launcher_runs_each_run_in_its_own_process(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    await spawn_worker("--launcher", "subprocess", concurrency=4)
    runs = [
        (await dispatcher.start(multi, {"tag": f"l{n}", "steps": 2, "delay": 0})).run_id for n in range(4)
    ]
    workers = set()
    for run_id in runs:
        assert await dispatcher.result(run_id, timeout=60) == 1
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        workers |= {e.data["worker"] for e in events if e.type == ev.RUN_STARTED}
    assert len(workers) == 4  # four executions, four processes (worker ids carry the pid)
    assert all(w.split("-")[-2].isdigit() for w in workers)


async def test_killed_execution_is_taken_over_and_resumed(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis, redis_url: str
) -> None:
    run_id = (await dispatcher.start(gated, {"tag": "ex"})).run_id
    cmd = [sys.executable, "-c", "from outlast.cli.main import main; main()", "execute", run_id, APP,
           "--redis", redis_url, "--heartbeat", "0.2", "--lease-timeout", "1"]  # fmt: skip
    env = {"APP_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    first = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.DEVNULL)
    await wait_event(dispatcher, run_id, ev.STEP_COMPLETED)  # work#0 done, now held at the gate
    first.send_signal(signal.SIGKILL)
    await first.wait()
    worker = await spawn_worker("--launcher", "subprocess")  # finds the orphan, launches a new execution
    await wait_event(dispatcher, run_id, ev.RUN_STARTED, attempt=2)
    await redis.rpush("gate:ex", "go")
    assert await dispatcher.result(run_id, timeout=60) == "open"
    # The launched execution (its stderr is the worker's) logs the takeover and the end, as a
    # worker executing runs itself does.
    await worker.logged(f"took over run {run_id} (attempt 2) from lost worker ")
    await worker.logged(f"run {run_id} completed (attempt 2)")
    assert await redis.get("ran:ex:0") == b"1"  # completed before the kill: replayed, not re-run
    check_stream(await events_of(dispatcher, run_id))


async def test_execute_refuses_a_run_someone_else_holds(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis_url: str
) -> None:
    await spawn_worker()
    run_id = (await dispatcher.start(gated, {"tag": "busy"})).run_id
    await wait_event(dispatcher, run_id, ev.STEP_COMPLETED)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from outlast.cli.main import main; main()", "execute", run_id, APP,
        "--redis", redis_url, stdout=asyncio.subprocess.PIPE,
        env={"APP_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"alive" in out
