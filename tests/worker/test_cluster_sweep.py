"""The start sweeper (outlast/worker/sweep.py): on a cluster, a start WITHOUT an idempotency key
whose process dies between its steps (index entry, run, work-stream entry, the rest) has nobody
to retry it; a worker's beat finds it from the run index's cursor and finishes it.

The crashes are faked as test_cluster_start.py does: one step of the start raises, the later ones
never happen. Workers are real processes with a short sweep grace (``OUTLAST_SWEEP_GRACE``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from outlast import events as ev
from outlast.api.app import create_app
from outlast.control import Dispatcher
from outlast.errors import StoreUnavailable
from outlast.events import RunStatus
from outlast.store import keys
from outlast.store.base import NewRun
from outlast.store.client import RedisClient
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.queue import RunQueue
from outlast.worker import Worker, sweep
from outlast.worker.sweep import StartSweep

from .app import quick
from .conftest import SpawnWorker

GRACE = {"OUTLAST_SWEEP_GRACE": "0.3"}

pytestmark = pytest.mark.cluster


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, valkey_cluster: EmbeddedCluster) -> str:
    """The workers' URL: the cluster's (the ``cluster`` marker's single-server variant is skipped)."""
    if getattr(request, "param", "cluster") != "cluster":
        pytest.skip("one server: a start is one script (START), nothing to sweep")
    return valkey_cluster.url


def dies_at(queue: RunQueue, step: str) -> None:
    """The starting process dies when it reaches ``step``: "create" (after the index entry),
    "dispatch" (after the run's record) or "finish" (after its work-stream entry)."""

    async def died(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(f"the starting process died before {step}")

    if step == "create":
        before_recording(queue, died)
    else:
        setattr(queue, step, died)


def before_recording(queue: RunQueue, then: Callable[[], Awaitable[None]]) -> None:
    """``then()`` runs when the start is about to call CREATE_PENDING (after its index step)."""
    script = queue._hot.script

    async def call(which: Any, *args: Any) -> Any:
        if which is queue._create:
            await then()
        return await script(which, *args)

    queue._hot.script = call  # type: ignore[method-assign]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Poll a condition another process makes true (no sleep stands in for it)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def started_without_key(redis: RedisClient, step: str, fairness_key: str | None = None) -> str:
    """A run of tenant t1 (queued fairly behind t1 unless ``fairness_key`` is "")."""
    broken = Dispatcher(redis)
    dies_at(broken.queue, step)
    with pytest.raises(StoreUnavailable):
        await broken.start(quick, {"n": 3}, tenant="t1", run_id=f"half-{step}", fairness_key=fairness_key)
    return f"half-{step}"


async def test_a_start_that_died_after_recording_its_run_is_run_after_the_sweep(
    cluster_redis: RedisClient, spawn_worker: SpawnWorker
) -> None:
    run_id = await started_without_key(cluster_redis, "dispatch")
    dispatcher = Dispatcher(cluster_redis)
    record = await dispatcher.store.get_run(run_id)
    assert (record.status, record.attempt) == (RunStatus.QUEUED, 0)
    assert await cluster_redis.xlen(keys.work_stream("dev")) == 0  # on no stream: nobody would run it

    await spawn_worker(env=GRACE)
    assert await dispatcher.result(run_id, timeout=30) == 3  # (its run.completed event)
    assert await cluster_redis.hget(keys.run_keys(run_id).meta, "dispatched") == b"1"
    assert await cluster_redis.zscore(keys.VERSIONS, "dev") is not None  # (its step 3, by the sweep)


async def test_a_start_that_died_after_its_index_entry_leaves_no_listed_run(
    cluster_redis: RedisClient, spawn_worker: SpawnWorker
) -> None:
    run_id = await started_without_key(cluster_redis, "create")
    assert await cluster_redis.zscore(keys.RUNS_INDEX, run_id) is not None
    assert not await cluster_redis.exists(keys.run_keys(run_id).meta)

    await spawn_worker(env=GRACE)

    async def unlisted() -> bool:
        return await cluster_redis.zscore(keys.RUNS_INDEX, run_id) is None

    await eventually(unlisted)
    assert not await cluster_redis.exists(keys.run_keys(run_id).meta)


@pytest.mark.parametrize("fair", [False, True], ids=["plain", "fair"])
async def test_a_start_that_died_after_dispatching_runs_exactly_once(
    cluster_redis: RedisClient, spawn_worker: SpawnWorker, fair: bool
) -> None:
    run_id = await started_without_key(cluster_redis, "finish", None if fair else "")
    stream = keys.work_stream("dev")
    waiting = keys.fair_waiting(stream, "t1")  # (a fair run waits in its key's list for the pump)

    async def entries() -> int:
        return int(await cluster_redis.llen(waiting) if fair else await cluster_redis.xlen(stream))

    assert await entries() == 1
    # A worker of another version sweeps (so the run is still unclaimed): a second entry.
    await spawn_worker(env=GRACE, version="other")

    async def marked() -> bool:
        return await cluster_redis.hget(keys.run_keys(run_id).meta, "dispatched") == b"1"

    await eventually(marked)
    assert await entries() == 2

    await spawn_worker(env=GRACE)
    dispatcher = Dispatcher(cluster_redis)
    assert await dispatcher.result(run_id, timeout=30) == 3
    record = await dispatcher.store.get_run(run_id)
    assert record.attempt == 1
    raw = await cluster_redis.xrange(keys.run_keys(run_id).events)
    started = [fields for _, fields in raw if f'"{ev.RUN_STARTED}"'.encode() in fields[b"e"]]
    assert len(started) == 1

    async def settled() -> bool:  # both entries read and acked: the duplicate's claim settled
        groups = await cluster_redis.xinfo_groups(stream)
        return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

    await eventually(settled)


async def test_the_cursor_means_each_run_is_examined_once(
    cluster_redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "BATCH", 2)  # pages end inside a run of equal scores
    dispatcher = Dispatcher(cluster_redis)
    for n in range(3):
        await dispatcher.start(quick, {"n": n})
    half = await started_without_key(cluster_redis, "dispatch")
    queue = RunQueue(cluster_redis)
    now_ms = int(time.time() * 1000)  # (every run above has a score up to this)
    for n in range(5):  # died after their index entries, all in the same millisecond
        await queue.index(f"ghost-{n}", now_ms)
    sweeper = StartSweep(cluster_redis, queue, worker_id="test", every=1.0, grace=0.0)

    assert await sweeper.sweep(now_ms=now_ms) == 9
    counts = sweeper.counts
    assert (counts.examined, counts.redispatched, counts.finished, counts.forgotten) == (9, 1, 0, 5)
    assert await cluster_redis.zcard(keys.RUNS_INDEX) == 4
    assert await cluster_redis.xlen(keys.work_stream("dev")) == 4
    assert await cluster_redis.hget(keys.run_keys(half).meta, "dispatched") == b"1"

    assert await sweeper.sweep(now_ms=now_ms) == 0  # nothing read again
    assert sweeper.counts.examined == 9
    await asyncio.sleep(0.002)  # (a clock past the cursor's millisecond: the next start's score)
    await dispatcher.start(quick, {"n": 9})
    assert await sweeper.sweep() == 1  # only the new one
    assert (sweeper.counts.examined, sweeper.counts.redispatched) == (10, 1)
    assert await sweeper.sweep() == 0


async def test_a_listing_racing_a_start_keeps_its_young_index_entry(
    cluster_redis: RedisClient, valkey_cluster: EmbeddedCluster
) -> None:
    app = create_app(valkey_cluster.url)
    async with app.router.lifespan_context(app):
        starter = Dispatcher(cluster_redis)
        recorded = asyncio.Event()
        listed = asyncio.Event()

        async def paused() -> None:  # between the index entry and the run
            recorded.set()
            await listed.wait()

        before_recording(starter.queue, paused)
        start = asyncio.create_task(starter.start(quick, {"n": 1}, run_id="racing"))
        await recorded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            page = (await http.get("/v1/runs")).json()
            assert page["runs"] == []  # not recorded yet: not shown
            assert await cluster_redis.zscore(keys.RUNS_INDEX, "racing") is not None  # …nor dropped
            listed.set()
            await start
            page = (await http.get("/v1/runs")).json()
            assert [run["run_id"] for run in page["runs"]] == ["racing"]
        # An old entry without a run is pruned by a listing, as before.
        await RunQueue(cluster_redis).index("expired-long-ago", int(time.time() * 1000) - 120_000)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            await http.get("/v1/runs")
        assert await cluster_redis.zscore(keys.RUNS_INDEX, "expired-long-ago") is None


async def test_a_claimed_run_whose_start_died_before_its_last_step_gets_that_step(
    cluster_redis: RedisClient,
) -> None:
    child = NewRun(run_id="child-1", workflow="quick", input={"n": 1}, parent="parent-1", tenant="t1")
    broken = RunQueue(cluster_redis)
    dies_at(broken, "finish")
    with pytest.raises(StoreUnavailable):
        await broken.enqueue(child, child.queued_event(), "dev")
    await Worker([quick], cluster_redis).run_until_idle()  # claimed and run: not dispatched again
    assert await cluster_redis.smembers(keys.run_keys("parent-1").children) == set()

    sweeper = StartSweep(cluster_redis, RunQueue(cluster_redis), worker_id="test", every=1.0, grace=0.0)
    assert await sweeper.sweep() == 1
    assert (sweeper.counts.redispatched, sweeper.counts.finished) == (0, 1)
    assert await cluster_redis.smembers(keys.run_keys("parent-1").children) == {b"child-1"}
    assert await cluster_redis.xlen(keys.work_stream("dev")) == 1
    assert await cluster_redis.hget(keys.run_keys("child-1").meta, "dispatched") == b"1"
    # A run the sweep found but that expired before its marker: no meta hash of one field is made.
    await RunQueue(cluster_redis).finish("expired-1", version="dev", created_ms=1, swept=True)
    assert not await cluster_redis.exists(keys.run_keys("expired-1").meta)


async def test_a_slow_start_whose_entry_was_swept_meanwhile_lists_its_run_again(
    cluster_redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlast.store import queue as queue_module

    monkeypatch.setattr(queue_module, "REINDEX_AFTER", 0.0)  # (as if it stalled past the threshold)
    starter = Dispatcher(cluster_redis)
    sweeper = StartSweep(cluster_redis, RunQueue(cluster_redis), worker_id="test", every=1.0, grace=0.0)

    async def stalled() -> None:  # a sweep passes between its index entry and its run
        await sweeper.sweep(now_ms=int(time.time() * 1000) + 1)

    before_recording(starter.queue, stalled)
    await starter.start(quick, {"n": 1}, run_id="slow", tenant="t1")
    assert sweeper.counts.forgotten == 1  # its entry was dropped, its run not yet recorded
    assert await cluster_redis.zscore(keys.RUNS_INDEX, "slow") is not None
    assert await cluster_redis.zscore(keys.tenant_runs_index("t1"), "slow") is not None
