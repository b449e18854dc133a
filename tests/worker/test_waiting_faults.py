"""Waiting runs with real worker processes: no slot held, SIGKILLed workers, a Redis restart."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store import keys
from outlast.store.embedded import EmbeddedServer

from .app import approval, fan_out, napper, quick
from .conftest import HEARTBEAT, SpawnWorker, WorkerProcess
from .test_faults import check_stream, events_of, wait_event

pytestmark = [pytest.mark.timeout(180), pytest.mark.cluster]


async def start_many(dispatcher: Dispatcher, wf: Any, inputs: Sequence[dict[str, Any]]) -> list[str]:
    runs: list[str] = []
    for chunk in range(0, len(inputs), 200):
        started = await asyncio.gather(*(dispatcher.start(wf, i) for i in inputs[chunk : chunk + 200]))
        runs.extend(s.run_id for s in started)
    return runs


async def all_waiting(dispatcher: Dispatcher, runs: Sequence[str]) -> None:
    """Each run has suspended (its run.waiting event is in its stream)."""
    for chunk in range(0, len(runs), 200):
        await asyncio.gather(*(wait_event(dispatcher, r, ev.RUN_WAITING) for r in runs[chunk : chunk + 200]))


async def statuses(redis: aioredis.Redis, runs: Sequence[str], *fields: str) -> list[list[Any]]:
    pipe = redis.pipeline(transaction=False)
    for run_id in runs:
        pipe.hmget(keys.run_keys(run_id).meta, list(fields))
    return [[v.decode() if v is not None else None for v in row] for row in await pipe.execute()]


async def reported_running(redis: aioredis.Redis, worker: WorkerProcess) -> list[str]:
    """What the worker says it runs, from a heartbeat report made after this call began."""
    raw = await redis.hget(keys.WORKERS, worker.id)
    first = json.loads(raw)["heartbeat_at"]
    for _ in range(100):  # the report is periodic: there is no event to await, only the next one
        await asyncio.sleep(HEARTBEAT)
        info = json.loads(await redis.hget(keys.WORKERS, worker.id))
        if info["heartbeat_at"] > first:
            return list(info["running"])
    raise AssertionError(f"worker {worker.id} stopped reporting")


async def supply_all(dispatcher: Dispatcher, runs: Sequence[str], value: Any) -> list[str]:
    answers: list[str] = []
    for chunk in range(0, len(runs), 200):
        answers += await asyncio.gather(
            *(dispatcher.supply_input(r, "approve", value) for r in runs[chunk : chunk + 200])
        )
    return answers


async def test_a_thousand_runs_wait_for_input_without_holding_the_worker(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    worker = await spawn_worker(concurrency=10)
    runs = await start_many(dispatcher, approval, [{"tag": f"a{i}"} for i in range(1000)])
    await all_waiting(dispatcher, runs)

    rows = await statuses(redis, runs, "status", "lease_owner", "lease_until")
    assert {tuple(row) for row in rows} == {("waiting", "", "0")}  # no lease on any of them
    assert await reported_running(redis, worker) == []
    # Its 10 slots are free: a new run goes straight through.
    other = await dispatcher.start(quick, {"n": 2})
    assert await dispatcher.result(other.run_id, timeout=30) == 2

    assert set(await supply_all(dispatcher, runs, {"ok": True})) == {"resumed"}
    results = [await dispatcher.result(run_id, timeout=60) for run_id in runs]
    assert results == ["approved"] * 1000
    # Replay on resume: the step before the wait ran once, the one after it once.
    pipe = redis.pipeline(transaction=False)
    for i in range(1000):
        pipe.get(f"ran:a{i}:0")
        pipe.get(f"ran:a{i}:1")
    assert set(await pipe.execute()) == {b"1"}
    check_stream(await events_of(dispatcher, runs[0]))


async def test_waiting_runs_survive_killed_workers_and_a_redis_restart(
    spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    server = EmbeddedServer(tmp_path / "restart").start()
    client = aioredis.Redis.from_url(server.url)
    dispatcher = Dispatcher(client)
    try:
        workers = [await spawn_worker(url=server.url), await spawn_worker(url=server.url)]
        by_input = await start_many(dispatcher, approval, [{"tag": f"k{i}"} for i in range(20)])
        by_timeout = await start_many(
            dispatcher, approval, [{"tag": f"t{i}", "timeout": 4.0} for i in range(10)]
        )
        await all_waiting(dispatcher, by_input + by_timeout)
        requested = [await wait_event(dispatcher, r, ev.INPUT_REQUESTED) for r in by_timeout]

        for worker in workers:
            worker.signal(signal.SIGKILL)
            assert await worker.wait() == -signal.SIGKILL
        server.kill()  # SIGKILL: AOF (everysec) has every acknowledged write
        server.start()
        await spawn_worker(url=server.url)

        assert set(await supply_all(dispatcher, by_input, {"ok": False})) == {"resumed"}
        assert [await dispatcher.result(r, timeout=60) for r in by_input] == ["rejected"] * 20
        assert [await dispatcher.result(r, timeout=60) for r in by_timeout] == ["timed out"] * 10
        for run_id, asked in zip(by_timeout, requested, strict=True):
            timed_out = await wait_event(dispatcher, run_id, ev.INPUT_TIMEOUT)
            assert timed_out.ts >= asked.data["deadline"]  # not early, even across the restart
            check_stream(await events_of(dispatcher, run_id))
    finally:
        await client.aclose()
        server.stop()


async def test_durable_sleep_wakes_on_time_across_a_worker_restart(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    first = await spawn_worker()
    run_id = (await dispatcher.start(napper, {"seconds": 2.0})).run_id
    started = await wait_event(dispatcher, run_id, ev.SLEEP_STARTED)
    await wait_event(dispatcher, run_id, ev.RUN_WAITING)
    first.signal(signal.SIGKILL)
    await first.wait()
    await spawn_worker()

    assert await dispatcher.result(run_id, timeout=30) == 2.0
    until = started.data["until"]
    ended = await wait_event(dispatcher, run_id, ev.SLEEP_ENDED)
    resumed = await wait_event(dispatcher, run_id, ev.RUN_STARTED, attempt=2)
    assert until <= ended.ts <= until + 1.0
    assert resumed.ts <= until + 1.0


async def test_ten_thousand_sleeping_runs_cost_no_worker_slots(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    worker = await spawn_worker(concurrency=50)
    runs = await start_many(dispatcher, napper, [{"seconds": 3600.0}] * 10_000)
    await all_waiting(dispatcher, runs)
    rows = await statuses(redis, runs, "status", "lease_until")
    assert {tuple(row) for row in rows} == {("waiting", "0")}
    assert await redis.zcard(keys.TIMERS) == 10_000
    assert await reported_running(redis, worker) == []
    other = await dispatcher.start(quick, {"n": 1})
    assert await dispatcher.result(other.run_id, timeout=30) == 1


async def test_fanned_out_children_lose_nothing_when_a_worker_is_killed(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    victim = await spawn_worker(concurrency=15)
    await spawn_worker(concurrency=15)
    parent = (await dispatcher.start(fan_out, {"tag": "f", "children": 20, "delay": 0.2})).run_id
    # Kill one worker once children are under way (a step of the first child completed).
    first = await wait_event(dispatcher, parent, ev.CHILD_STARTED)
    await wait_event(dispatcher, first.data["child_run_id"], ev.STEP_COMPLETED)
    victim.signal(signal.SIGKILL)
    await victim.wait()

    assert await dispatcher.result(parent, timeout=90) == 20 * (0 + 1 + 2)
    children = sorted(c.decode() for c in await redis.smembers(keys.run_keys(parent).children))
    assert len(children) == 20
    assert await redis.zcard(keys.RUNS_INDEX) == 21  # the parent and 20 children: none started twice
    parent_events = await events_of(dispatcher, parent)
    check_stream(parent_events)
    started = [e.data["child_run_id"] for e in parent_events if e.type == ev.CHILD_STARTED]
    assert sorted(started) == children
    assert sum(e.type == ev.CHILD_COMPLETED for e in parent_events) == 20
    for child in children:
        events = await events_of(dispatcher, child)
        check_stream(events)
        assert [e.type for e in events].count(ev.RUN_QUEUED) == 1
        assert events[-1].type == ev.RUN_COMPLETED
        assert events[-1].data["result"] == 3
