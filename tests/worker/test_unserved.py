"""Workers whose code lacks a workflow: they never fail its runs, and never join a version whose
live workers run other code. Real ``outlast worker`` processes with different app files."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store import keys
from outlast.store.leases import RunLeases

from .app import anywhere, multi, quick
from .conftest import APP, HEARTBEAT, LEASE, SpawnWorker
from .test_faults import check_stream, events_of

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]

OLDER = str(Path(__file__).with_name("app_older.py"))  # lacks `quick` and `anywhere`
WARNING = "has no workflow {!r}"


async def worker_of_version_v(app: str, redis_url: str) -> asyncio.subprocess.Process:
    """An ``outlast worker`` of ``app`` for version ``v``, its output piped (not waited for)."""
    cmd = [
        sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", app,
        "--redis", redis_url, "--version", "v", "--heartbeat", str(HEARTBEAT), "--lease-timeout", str(LEASE),
    ]  # fmt: skip
    env = {"COLUMNS": "1000", "PATH": "/usr/bin:/bin", "APP_REDIS_URL": redis_url}
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


async def test_a_worker_with_other_code_refuses_to_join_a_version(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, redis_url: str
) -> None:
    del redis  # (requested for its flush: a clean database)
    current = await spawn_worker(version="v")
    proc = await worker_of_version_v(OLDER, redis_url)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    message = err.decode()
    assert proc.returncode == 1, out + err
    assert f"version 'v' is served by live worker {current.id} with other code" in message
    missing = message.split("missing here: ", 1)[1].split(")", 1)[0].split(", ")
    assert {"anywhere", "quick"} <= set(missing)
    assert not {"multi", "hang", "gated"} & set(missing)
    assert "another --version" in message
    assert "Traceback" not in message
    # Once that worker left, the older code may take the version over (and says what it serves).
    current.signal(signal.SIGTERM)
    assert await current.wait() == 0
    older = await spawn_worker(version="v", app=OLDER)
    assert older.proc.returncode is None


async def test_runs_a_worker_cannot_serve_wait_for_one_that_can(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    older = await spawn_worker(version="v", app=OLDER)
    runs = [(await dispatcher.start(quick, {"n": 2}, version="v")).run_id for _ in range(6)]
    log = await older.logged(WARNING.format("quick"))
    # It looked at every run and put each back on the queue rather than failing it.
    deadline = time.monotonic() + 30
    while await redis.xlen(keys.work_stream("v")) < 2 * len(runs):
        assert time.monotonic() < deadline, "the worker did not put the runs back"
        await asyncio.sleep(0.05)
    for run_id in runs:
        record = await dispatcher.store.get_run(run_id)
        assert (record.status, record.attempt, record.losses) == ("queued", 0, 0)
    older.signal(signal.SIGTERM)
    assert await older.wait() == 0
    assert older.stderr().count(WARNING.format("quick")) == 1, log  # loud, once per workflow
    current = await spawn_worker(version="v")
    for run_id in runs:
        assert await dispatcher.result(run_id, timeout=30) == 2
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        assert [e.data["worker"] for e in events if e.type == ev.RUN_STARTED] == [current.id]


async def test_upgrade_safe_runs_go_to_the_version_whose_code_has_them(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    # Two live workers share the upgrade-safe lane; only v2's code has `anywhere`.
    older = await spawn_worker(version="v1", app=OLDER)
    current = await spawn_worker(version="v2")
    runs = [(await dispatcher.start(anywhere, {"tag": f"a{n}"}, version="v1")).run_id for n in range(6)]
    for n, run_id in enumerate(runs):
        assert await dispatcher.result(run_id, timeout=30) == f"a{n}"
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        assert [e.data["worker"] for e in events if e.type == ev.RUN_STARTED] == [current.id]
        assert (await dispatcher.store.get_run(run_id)).attempt == 1
    assert older.proc.returncode is None
    assert older.stderr().count(WARNING.format("anywhere")) <= 1


async def test_orphans_a_worker_cannot_serve_never_hide_those_it_can(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # What a worker killed after its first heartbeat leaves: leases that expired, listed in the
    # lease index, their work-stream entries acked (the takeover scan is the only way back). The
    # oldest orphans are of `quick`, which the surviving code lacks; the newest is a `multi`.
    # A worker with one free slot must look past the ones it cannot serve.
    stream, index = keys.work_stream("v"), keys.lease_index("v")
    await redis.xgroup_create(stream, keys.WORK_GROUP, id="0", mkstream=True)
    lacking = [(await dispatcher.start(quick, {"n": 1}, version="v")).run_id for _ in range(3)]
    servable = (await dispatcher.start(multi, {"tag": "o", "steps": 2, "delay": 0.0}, version="v")).run_id
    read = await redis.xreadgroup(keys.WORK_GROUP, "dead-worker", {stream: ">"}, count=10)
    await redis.xack(stream, keys.WORK_GROUP, *[entry_id for entry_id, _ in read[0][1]])
    leases = RunLeases(redis)
    for order, run_id in enumerate([*lacking, servable], 1):
        claim = await leases.claim(run_id, "dead-worker", 1, 5)
        assert claim.status == "ok"
        await redis.zadd(index, {run_id: order})  # expired long ago, oldest first
    older = await spawn_worker(version="v", app=OLDER, concurrency=1)
    assert await dispatcher.result(servable, timeout=30) == 0 + 1
    events = await events_of(dispatcher, servable)
    assert [e.data["worker"] for e in events if e.type == ev.RUN_STARTED] == [older.id]
    for run_id in lacking:  # left for a worker that has `quick`: not failed, no loss counted here
        record = await dispatcher.store.get_run(run_id)
        assert (record.status, record.attempt, record.losses) == ("running", 1, 0)


async def test_a_worker_whose_host_clock_is_behind_stays_listed_and_keeps_other_code_out(
    spawn_worker: SpawnWorker,
    dispatcher: Dispatcher,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hosts' clocks differ; the lease clock is the server's. A worker on a host 30 s behind the
    # one reading the workers must still count as live: not pruned by `outlast workers` or
    # `deploy status`, and still keeping workers of other code out of its version.
    skewed = tmp_path / "clock-behind"
    skewed.mkdir()
    clock = "import time\n_real = time.time\ntime.time = lambda: _real() - 30.0\n"
    (skewed / "sitecustomize.py").write_text(clock)
    monkeypatch.setenv("PYTHONPATH", str(skewed))
    behind = await spawn_worker(version="v")
    monkeypatch.delenv("PYTHONPATH")
    assert [w["id"] for w in await dispatcher.workers()] == [behind.id]
    (listed,) = await dispatcher.workers()  # (read twice: not pruned)
    assert listed["id"] == behind.id
    assert 0 <= listed["heartbeat_age"] < 5  # (last beat every 0.2 s; on the host's clock, 30 s)
    status = await dispatcher.deploy_status()
    assert [(v["version"], v["workers"]) for v in status["versions"]] == [("v", 1)]
    proc = await worker_of_version_v(OLDER, redis_url)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, out + err
    assert f"served by live worker {behind.id} with other code" in err.decode()


async def test_of_two_workers_with_other_code_starting_at_once_one_refuses(
    redis: aioredis.Redis, redis_url: str
) -> None:
    del redis  # (requested for its flush: a clean database)
    procs = [await worker_of_version_v(app, redis_url) for app in (APP, OLDER)]
    try:
        # Registration is one script: whichever comes second sees the first listed, and refuses.
        exits = [asyncio.create_task(p.wait()) for p in procs]
        await asyncio.wait(exits, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        refused = next(p for p in procs if p.returncode is not None)
        serving = next(p for p in procs if p is not refused)
        assert refused.returncode == 1
        assert refused.stderr is not None
        assert "with other code" in (await refused.stderr.read()).decode()
        assert serving.stdout is not None
        line = await asyncio.wait_for(serving.stdout.readline(), 30)  # printed once registered
        assert line.startswith(b"worker "), line
        assert serving.returncode is None
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0
