"""max_attempts bounds the worker losses in a row without progress, over real worker processes.

The workflow's steps SIGKILL their own worker process (``app.crashy``), so every loss happens at
a known point, and a pool respawns a worker each time one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher

from .app import crashy
from .conftest import SpawnWorker, WorkerProcess

pytestmark = [pytest.mark.timeout(180), pytest.mark.cluster]


@contextlib.asynccontextmanager
async def respawning(spawn_worker: SpawnWorker, *args: str) -> AsyncIterator[list[WorkerProcess]]:
    """One worker at a time; a new one starts each time the current one dies."""
    spawned: list[WorkerProcess] = []

    async def keep_one() -> None:
        while True:
            worker = await spawn_worker(*args)
            spawned.append(worker)
            await worker.proc.wait()

    task = asyncio.create_task(keep_one())
    try:
        yield spawned
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_losses_between_committed_steps_do_not_exhaust_a_run(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # Four losses (each step kills its worker once) with max_attempts=2: the run must live on,
    # since it commits a step between any two losses.
    run_id = (await dispatcher.start(crashy, {"tag": "p", "steps": 4})).run_id
    async with respawning(spawn_worker, "--max-attempts", "2") as workers:
        assert await dispatcher.result(run_id, timeout=120) == 0 + 1 + 2 + 3
    events = [e async for e in dispatcher.store.read_events(run_id, follow=False)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completed = Counter(e.step for e in events if e.type == ev.STEP_COMPLETED)
    assert sorted(completed.values()) == [1, 1, 1, 1]
    for i in range(4):  # killed once, then committed: never again after the commit
        assert await redis.get(f"ran:p:{i}") == b"2"
    record = await dispatcher.store.get_run(run_id)
    assert (record.attempt, record.losses) == (5, 0)
    assert record.lost_workers.split(",") == [w.id for w in workers[:4]]


async def test_a_poison_pill_still_fails_with_the_losses_it_had(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # Step 0 kills its worker once (then commits: progress); step 1 kills every worker that runs it.
    run_id = (await dispatcher.start(crashy, {"tag": "x", "steps": 3, "poison_at": 1})).run_id
    async with respawning(spawn_worker, "--max-attempts", "3") as workers:
        failed = None
        async for event in dispatcher.store.read_events(run_id, block_ms=200):
            if event.terminal:
                failed = event
    assert failed is not None
    assert failed.type == ev.RUN_FAILED, failed
    assert failed.data["reason"] == "attempts_exhausted"
    error = failed.data["error"]
    assert error["type"] == "AttemptsExhausted"
    assert error["losses"] == 3
    assert "lost its worker 3 times in a row without making progress (max_attempts=3)" in error["message"]
    # Every worker that ran a step died: the one at step 0, then three at step 1.
    assert failed.data["lost_workers"] == [w.id for w in workers[:4]]
    assert await redis.get("ran:x:0") == b"2"
    assert await redis.get("ran:x:1") == b"3"  # the fourth claim did not run it again
    record = await dispatcher.store.get_run(run_id)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error["losses"] == 3
