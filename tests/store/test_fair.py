"""The fair-queue scripts against a real Valkey: round-robin, weights, caps, bells, partitions."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outlast.errors import ConfigError
from outlast.store import keys
from outlast.store.base import NewRun
from outlast.store.fair import Fairness, Partitions, configured_partitions, partition_of
from outlast.store.queue import RunQueue

STREAM = keys.work_stream("dev")

pytestmark = pytest.mark.cluster  # (each script touches one slot: the partition's)


async def start(queue: RunQueue, run_id: str, fairness: Fairness | None, **kw: str) -> None:
    run = NewRun(run_id=run_id, workflow="w", input={}, version="dev", **kw)
    assert await queue.enqueue(run, run.queued_event(), "dev", fairness)


async def stream_runs(redis: aioredis.Redis) -> list[str]:
    return [f[b"run"].decode() for _, f in await redis.xrange(STREAM) if f.get(b"run")]


@pytest.fixture
async def queue(redis: aioredis.Redis) -> RunQueue:
    await redis.xgroup_create(STREAM, keys.WORK_GROUP, id="0", mkstream=True)
    return RunQueue(redis)


async def test_pump_round_robins_across_keys_in_arrival_order_per_key(
    queue: RunQueue, redis: aioredis.Redis
) -> None:
    for i in range(6):
        await start(queue, f"a{i}", Fairness("A"))
    for i in range(2):
        await start(queue, f"b{i}", Fairness("B"))
    await start(queue, "plain", None)  # no key: straight onto the stream
    # One bell rang for the ring going non-empty; the record carries its key and partition.
    bells = [f for _, f in await redis.xrange(STREAM) if f.get(b"bell")]
    assert len(bells) == 1
    assert await redis.hmget(keys.run_keys("a0").meta, "fairness_key", "queue") == [b"A", STREAM.encode()]
    # Two entries are undelivered (the bell and the plain run): a pump for 6 moves 4.
    assert await queue.fair.pump(STREAM, 6) == (4, 1)
    assert await stream_runs(redis) == ["plain", "a0", "b0", "a1", "b1"]
    await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})  # delivered: the lag is 0
    assert await queue.fair.pump(STREAM, 10) == (4, 0)
    assert (await stream_runs(redis))[5:] == ["a2", "a3", "a4", "a5"]
    ring, parked, *_ = keys.fair_keys(STREAM)
    assert await redis.exists(ring, parked, keys.fair_waiting(STREAM, "A")) == 0


async def test_weights_give_a_key_more_runs_per_turn_even_across_short_pumps(
    queue: RunQueue, redis: aioredis.Redis
) -> None:
    for i in range(6):
        await start(queue, f"a{i}", Fairness("A", weight=3))
    for i in range(3):
        await start(queue, f"b{i}", Fairness("B"))
    await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})  # (the bell)
    moved = []
    for _ in range(9):  # one run at a time: A's turn of 3 resumes where the last pump stopped
        assert (await queue.fair.pump(STREAM, 1))[0] == 1
        await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})
    moved = await stream_runs(redis)
    assert moved == ["a0", "a1", "a2", "b0", "a3", "a4", "a5", "b1", "b2"]


async def test_a_capped_key_parks_and_a_release_puts_it_back(queue: RunQueue, redis: aioredis.Redis) -> None:
    for i in range(4):
        await start(queue, f"a{i}", Fairness("A", max_concurrency=2))
    await start(queue, "b0", Fairness("B"))
    await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})
    assert await queue.fair.pump(STREAM, 10) == (3, 0)  # a0, b0, a1: A is at its cap
    ring, parked, *_ = keys.fair_keys(STREAM)
    assert await redis.smembers(parked) == {b"A"}
    assert await queue.fair.pump(STREAM, 10) == (0, 0)
    # a0 has not ended: the reaper keeps its slot; once it is gone (expired, say), it goes.
    await start(queue, "filler", None)  # (a0's record exists: reap looks at its status)
    assert await queue.fair.reap(STREAM) == 0
    await redis.hset(keys.run_keys("a0").meta, "status", "completed")
    assert await queue.fair.reap(STREAM) == 1
    assert await redis.smembers(parked) == set()
    assert await redis.lrange(ring, 0, -1) == [b"A"]
    await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})
    assert await queue.fair.pump(STREAM, 10) == (1, 0)  # a2; A parks again at 2 (a1, a2)
    assert (await stream_runs(redis))[-1] == "a2"
    # A release of a run not held (a second worker's release of the same run) changes nothing.
    assert await queue.fair.release(STREAM, "A", ["a0"]) == 0
    assert await redis.zrange(keys.fair_running(STREAM, "A"), 0, -1) == [b"a1", b"a2"]


async def test_at_most_one_bell_waits_on_a_partition(queue: RunQueue, redis: aioredis.Redis) -> None:
    await start(queue, "a0", Fairness("A"))
    await queue.fair.pump(STREAM, 0)  # clears the bell key, moves nothing (want 0): A still waits
    await start(queue, "b0", Fairness("B"))  # the ring was not empty: no bell
    await redis.xreadgroup(keys.WORK_GROUP, "w", {STREAM: ">"})
    assert await queue.fair.pump(STREAM, 5) == (2, 0)
    for i in range(20):  # ring empty, then non-empty again: one bell, not twenty
        await start(queue, f"c{i}", Fairness(f"C{i}"))
    fields = [f for _, f in await redis.xrange(STREAM)]
    assert sum(1 for f in fields if f.get(b"bell")) == 2  # the first start's, and this one


async def test_partitions_are_recorded_and_starts_spread_over_them(redis: aioredis.Redis) -> None:
    parts = Partitions(redis)
    assert await parts.get("dev") == (1, 1)
    assert await Partitions(redis).record("dev", 4) == (4, 4)
    assert await Partitions(redis).record("dev", 2) == (2, 4)  # fewer now; 4 stay read
    parts = Partitions(redis)
    streams = {await parts.stream_for("dev") for _ in range(8)}
    assert streams == {keys.work_stream("dev"), keys.work_partition("dev", 1)}
    tenant_partition = keys.work_partition("dev", partition_of("tenant-x", 2))
    assert await parts.stream_for("dev", "tenant-x") == tenant_partition
    assert keys.work_partition("dev", 0) == "outlast:work:dev"
    assert keys.work_partition("v1:2", 3) == "outlast:work:v1:2/3"  # ('/' is not in version names)
    assert configured_partitions({"OUTLAST_QUEUE_PARTITIONS": "8"}) == 8
    with pytest.raises(ConfigError, match="OUTLAST_QUEUE_PARTITIONS"):
        configured_partitions({"OUTLAST_QUEUE_PARTITIONS": "0"})
    with pytest.raises(ConfigError, match="fairness key"):
        Fairness("")
