"""A start on a cluster takes several steps (its index entry, the run on its slot, its work-stream
entry, the rest; see outlast/store/queue.py). A process that dies between them leaves a run
recorded but never dispatched: its caller got an error, and retrying the start repairs it at once
(without a retry, the start sweeper does: tests/worker/test_start_sweep.py)."""

from __future__ import annotations

from typing import Any

import pytest

from outlast.control import Dispatcher
from outlast.errors import StoreUnavailable
from outlast.events import RunStatus
from outlast.store import keys
from outlast.store.base import NewRun
from outlast.store.client import RedisClient
from outlast.store.queue import RunQueue
from outlast.worker import Worker

from .app import quick


def dies_before_dispatching(queue: RunQueue) -> None:
    """The process dies right after the run's own script: the enqueue step never happens."""

    async def died(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("the starting process died here")

    queue.dispatch = died  # type: ignore[method-assign]


async def listed(redis: RedisClient, run_id: str) -> bool:
    return await redis.zscore(keys.RUNS_INDEX, run_id) is not None


async def test_a_retried_start_dispatches_a_run_whose_first_start_died_halfway(
    cluster_redis: RedisClient,
) -> None:
    broken = Dispatcher(cluster_redis)
    dies_before_dispatching(broken.queue)
    with pytest.raises(StoreUnavailable):
        await broken.start(quick, {"n": 2}, idempotency_key="order-7")
    run_id = (await cluster_redis.get(keys.idempotency_key("quick", "order-7"))).decode()
    record = await broken.store.get_run(run_id)
    assert (record.status, record.attempt) == (RunStatus.QUEUED, 0)
    assert await cluster_redis.xlen(keys.work_stream("dev")) == 0  # recorded, not dispatched
    assert await listed(cluster_redis, run_id)  # (the index first: the sweeper's way in)
    assert await cluster_redis.hget(keys.run_keys(run_id).meta, "dispatched") is None

    dispatcher = Dispatcher(cluster_redis)
    again = await dispatcher.start(quick, {"n": 2}, idempotency_key="order-7")
    assert (again.run_id, again.created) == (run_id, False)
    assert await cluster_redis.hget(keys.run_keys(run_id).meta, "dispatched") == b"1"
    await Worker([quick], cluster_redis).run_until_idle()
    assert await dispatcher.result(run_id, timeout=10) == 2
    # Retried again once dispatched: nothing more is queued.
    await dispatcher.start(quick, {"n": 2}, idempotency_key="order-7")
    assert await cluster_redis.xlen(keys.work_stream("dev")) == 1


async def test_a_replayed_child_start_dispatches_a_child_whose_start_died_halfway(
    cluster_redis: RedisClient,
) -> None:
    child = NewRun(run_id="child-1", workflow="quick", input={"n": 1}, parent="parent-1", tenant="t1")
    broken = RunQueue(cluster_redis)
    dies_before_dispatching(broken)
    with pytest.raises(StoreUnavailable):
        await broken.enqueue(child, child.queued_event(), "dev")
    assert await cluster_redis.smembers(keys.run_keys("parent-1").children) == set()

    # The parent's next attempt replays the start of the same child (same run id).
    assert await RunQueue(cluster_redis).enqueue(child, child.queued_event(), "dev") is False
    assert await cluster_redis.smembers(keys.run_keys("parent-1").children) == {b"child-1"}
    assert await cluster_redis.zscore(keys.tenant_runs_index("t1"), "child-1") is not None
    await Worker([quick], cluster_redis).run_until_idle()
    assert (await Dispatcher(cluster_redis).store.get_run("child-1")).status == RunStatus.COMPLETED
