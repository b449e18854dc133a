"""Fair queues and queue partitions with real worker processes (``outlast worker`` subprocesses).

Speed is measured in ``bench/fairness.py``; these tests assert orderings and counts that hold
however fast the machine is.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store import keys
from outlast.store.fair import FairQueues
from outlast.store.queue import WORK_STREAM_MAXLEN

from .app import approval, hang, multi, quick
from .conftest import SpawnWorker
from .test_faults import wait_event

pytestmark = [pytest.mark.timeout(180), pytest.mark.cluster]


async def times(redis: aioredis.Redis, run_ids: list[str], *fields: str) -> list[list[float]]:
    """Each run's ``fields`` of its record, as numbers (its worker's clock, or the server's: one host)."""
    pipe = redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run_keys(run_id).meta, *fields)
    return [[float(v) for v in values] for values in await pipe.execute()]


async def start_many(dispatcher: Dispatcher, n: int, key: str, chunk: int = 250) -> list[str]:
    ids: list[str] = []
    for done in range(0, n, chunk):
        batch = range(min(chunk, n - done))
        started = await asyncio.gather(*(dispatcher.start(quick, {"n": 1}, fairness_key=key) for _ in batch))
        ids += [s.run_id for s in started]
    return ids


async def test_a_burst_of_one_key_does_not_hold_up_another_keys_runs(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    """The issue's scenario: A bursts 5,000 runs; B starts 10 once A is under way. B's runs are
    taken round-robin with A's instead of after A's backlog. (The workers start after A's burst is
    queued, so thousands of A's runs are still waiting when B starts, however fast they run.)"""
    a_ids = await start_many(dispatcher, 5000, "A")
    await asyncio.gather(spawn_worker(), spawn_worker())
    await dispatcher.wait(a_ids[199], timeout=120)  # A is under way (its runs go in order)
    b_ids = [(await dispatcher.start(quick, {"n": 1}, fairness_key="B")).run_id for _ in range(10)]
    for run_id in [*b_ids, a_ids[-1]]:
        assert (await dispatcher.wait(run_id, timeout=120)).status == "completed"
    b_times = await times(redis, b_ids, "created_at", "started_at")
    a_started = sorted(t for (t,) in await times(redis, a_ids, "started_at"))
    b_last = max(started for _, started in b_times)
    # Every B run started before A's 100th-from-last (without fairness: after all of A's).
    assert b_last < a_started[-100]
    # Once all of B's runs were queued, until the last of them started, only the runs already
    # pumped or running and B's round-robin partners of A started: a few dozen of the thousands
    # queued. (Counted from B's last start, not its first: how many of A's run while B's ten are
    # being started one by one depends on the machine's speed, not on fairness.)
    b_queued = max(created for created, _ in b_times)
    assert sum(1 for t in a_started if b_queued <= t <= b_last) <= 200
    assert sum(1 for t in a_started if t > b_last) >= 4000
    waits = sorted(started - created for created, started in b_times)
    print(f"B start→running: p50 {waits[4] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")


def most_at_once(spans: list[list[float]]) -> int:
    """The most spans (start, end) open at one moment (an end before a start at the same time)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


async def test_a_cap_holds_across_two_workers(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    await asyncio.gather(spawn_worker(concurrency=4), spawn_worker(concurrency=4))
    capped = [
        (await dispatcher.start(multi, {"tag": f"c{i}", "steps": 1, "delay": 0.05}, fairness_key="K",
                                max_concurrency=2)).run_id
        for i in range(12)
    ]  # fmt: skip
    free = [
        (await dispatcher.start(multi, {"tag": f"f{i}", "steps": 1, "delay": 0.05}, fairness_key="L")).run_id
        for i in range(12)
    ]
    for run_id in capped + free:
        assert (await dispatcher.wait(run_id, timeout=60)).status == "completed"
    # From the runs' own records: claimed (started_at) to ended (finished_at).
    assert most_at_once(await times(redis, capped, "started_at", "finished_at")) <= 2
    assert await redis.zcard(keys.fair_running(keys.work_stream("dev"), "K")) == 0  # every slot released


async def test_a_killed_workers_capped_run_does_not_keep_its_slot(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    first = await spawn_worker()
    held = (await dispatcher.start(hang, {"tag": "h"}, fairness_key="K", max_concurrency=1)).run_id
    await wait_event(dispatcher, held, ev.STATUS)  # running on the first worker, holding K's one slot
    queued = (await dispatcher.start(quick, {"n": 3}, fairness_key="K")).run_id
    first.signal(signal.SIGKILL)
    await first.wait()
    # Nobody will ever end `held` on a worker: it is cancelled while orphaned (no live lease), so
    # no worker releases its slot; the next worker's beat finds it ended and frees it.
    assert (await dispatcher.cancel(held)).status in ("cancelled", "cancelling")
    await spawn_worker()
    assert await dispatcher.result(queued, timeout=30) == 3
    assert (await dispatcher.wait(held, timeout=30)).status == "cancelled"


async def test_four_partitions_all_receive_runs_and_one_worker_consumes_them(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    await spawn_worker(env={"OUTLAST_QUEUE_PARTITIONS": "4"})
    plain = [(await dispatcher.start(quick, {"n": 1})).run_id for _ in range(20)]
    fair = [(await dispatcher.start(quick, {"n": 1}, fairness_key=f"k{i}")).run_id for i in range(20)]
    for run_id in plain + fair:
        assert await dispatcher.result(run_id, timeout=30) == 1
    streams = [keys.work_partition("dev", i) for i in range(4)]
    for stream in streams:
        (group,) = await redis.xinfo_groups(stream)
        assert group["entries-read"] >= 5, (stream, group)  # round-robin: 5 plain runs each, read
    queues = {q.decode() for (q,) in [await redis.hmget(keys.run_keys(r).meta, "queue") for r in fair]}
    assert queues <= set(streams)
    assert await redis.hget(keys.PARTITIONS, "dev") == b"4 4"
    # Runs that suspend (waiting for input) are re-queued onto the partitions when woken.
    before = [(await redis.xinfo_groups(stream))[0]["entries-read"] for stream in streams]
    waiting = [
        (await dispatcher.start(approval, {"tag": f"w{i}"}, fairness_key="W")).run_id for i in range(8)
    ]
    for run_id in waiting:
        await wait_event(dispatcher, run_id, ev.RUN_WAITING)
    for run_id in waiting:
        assert await dispatcher.supply_input(run_id, "approve", {"ok": True}) == "resumed"
    for run_id in waiting:
        assert await dispatcher.result(run_id, timeout=30) == "approved"
    after = [(await redis.xinfo_groups(stream))[0]["entries-read"] for stream in streams]
    assert all(a >= b + 2 for a, b in zip(after, before, strict=True)), (before, after)  # 8 wakes, 4 ways


async def test_pumped_entries_survive_a_worker_killed_before_claiming_them(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    stream = keys.work_stream("dev")
    await redis.xgroup_create(stream, keys.WORK_GROUP, id="0", mkstream=True)
    ids = [(await dispatcher.start(quick, {"n": 2}, fairness_key="K")).run_id for _ in range(6)]
    assert await FairQueues(redis, WORK_STREAM_MAXLEN).pump(stream, 10) == (6, 0)
    # What a worker killed between its read and its claims leaves: the entries pending for it.
    await redis.xreadgroup(keys.WORK_GROUP, "dead-worker", {stream: ">"})
    assert (await redis.xpending(stream, keys.WORK_GROUP))["pending"] == 7  # (and the bell)
    await spawn_worker()  # takes them over once idle for a lease timeout (XAUTOCLAIM)
    for run_id in ids:
        assert await dispatcher.result(run_id, timeout=30) == 2
