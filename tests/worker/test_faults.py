"""Compute-plane acceptance with real worker processes: SIGKILL, SIGSTOP, SIGTERM, exhaustion."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher

from .app import gated, hang, multi
from .conftest import LEASE, SpawnWorker

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


async def events_of(dispatcher: Dispatcher, run_id: str) -> list[ev.Event]:
    return [e async for e in dispatcher.store.read_events(run_id, follow=False)]


async def wait_event(dispatcher: Dispatcher, run_id: str, type: str, attempt: int | None = None) -> ev.Event:
    async for event in dispatcher.store.read_events(run_id, block_ms=200):
        if event.type == type and (attempt is None or event.attempt == attempt):
            return event
    raise AssertionError(f"run {run_id} ended without {type} (attempt {attempt})")


def check_stream(events: list[ev.Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completed = Counter(e.step for e in events if e.type == ev.STEP_COMPLETED)
    assert all(n == 1 for n in completed.values()), completed


async def test_sigkill_one_of_two_workers_loses_nothing(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # The survivor has room for all of the victim's runs: the bound is on detection and claim,
    # not on waiting for a slot (a full worker gives its next free slot to orphans first).
    victim = await spawn_worker(concurrency=20)
    survivor = await spawn_worker(concurrency=60)
    runs = [
        (await dispatcher.start(multi, {"tag": f"r{n}", "steps": 5, "delay": 0.1})).run_id for n in range(50)
    ]
    # Kill the victim once it has completed some steps and holds runs mid-way.
    owned: list[str] = []
    while not owned:
        started = [await wait_event(dispatcher, run_id, ev.RUN_STARTED) for run_id in runs[:20]]
        owned = [run_id for run_id, e in zip(runs, started, strict=False) if e.data["worker"] == victim.id]
    await wait_event(dispatcher, owned[0], ev.STEP_COMPLETED)
    victim.signal(signal.SIGKILL)
    killed_at = time.time()
    assert await victim.wait() == -signal.SIGKILL

    results = [await dispatcher.result(run_id, timeout=60) for run_id in runs]
    assert results == [0 + 1 + 2 + 3 + 4] * 50
    latencies = []
    for n, run_id in enumerate(runs):
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        attempts = [e for e in events if e.type == ev.RUN_STARTED]
        if len(attempts) > 1:
            assert attempts[0].data["worker"] == victim.id
            assert attempts[-1].data["worker"] == survivor.id
            latencies.append(attempts[-1].ts - killed_at)
        for e in events:
            if e.type != ev.STEP_COMPLETED:
                continue
            i = int(e.data["result"])
            ran = int(await redis.get(f"ran:r{n}:{i}") or 0)
            if e.attempt < attempts[-1].attempt:
                assert ran == 1, (run_id, e.step)  # completed before the takeover: never ran again
            else:
                # In flight at the kill: it may have run once per attempt (attempt numbers count
                # claims, including one killed before its run.started reached the stream).
                assert 1 <= ran <= attempts[-1].attempt
    assert latencies, "the victim held runs, so some must have been taken over"
    print(f"takeover latency after SIGKILL: max {max(latencies):.2f}s over {len(latencies)} runs")
    assert max(latencies) <= LEASE + 1.0


async def test_sigstopped_worker_is_fenced_off_after_takeover(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    paused = await spawn_worker()
    run_id = (await dispatcher.start(multi, {"tag": "stop", "steps": 30, "delay": 0.1})).run_id
    await wait_event(dispatcher, run_id, ev.STEP_COMPLETED)
    paused.signal(signal.SIGSTOP)
    other = await spawn_worker()
    takeover = await wait_event(dispatcher, run_id, ev.RUN_STARTED, attempt=2)
    assert takeover.data["worker"] == other.id
    paused.signal(signal.SIGCONT)  # it wakes up believing it still owns the run
    assert await dispatcher.result(run_id, timeout=60) == sum(range(30))
    events = await events_of(dispatcher, run_id)
    check_stream(events)
    assert all(e.attempt == 2 for e in events if e.seq > takeover.seq), "stale attempt wrote after takeover"
    record = await dispatcher.store.get_run(run_id)
    assert record.lease_owner == other.id
    assert paused.id in record.lost_workers
    paused.signal(signal.SIGTERM)
    assert await paused.wait() == 0
    log = paused.stderr()
    assert "lost the lease" in log or "is stale" in log, log


async def test_sigterm_drains_in_flight_runs_then_exits_zero(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    worker = await spawn_worker("--drain-timeout", "30")
    runs = [
        (await dispatcher.start(multi, {"tag": f"d{n}", "steps": 4, "delay": 0.1})).run_id for n in range(5)
    ]
    for run_id in runs:
        await wait_event(dispatcher, run_id, ev.RUN_STARTED)
    worker.signal(signal.SIGTERM)
    late = (await dispatcher.start(multi, {"tag": "late", "steps": 1, "delay": 0})).run_id
    assert await worker.wait() == 0
    for run_id in runs:
        record = await dispatcher.store.get_run(run_id)
        assert (record.status, record.attempt) == ("completed", 1)
    assert (await dispatcher.store.get_run(late)).status == "queued"  # a draining worker takes nothing new


async def test_short_drain_hands_runs_to_another_worker(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    leaving = await spawn_worker("--drain-timeout", "0.2")
    # Gated runs cannot finish inside the drain window however slowly the second worker starts.
    runs = [(await dispatcher.start(gated, {"tag": f"h{n}"})).run_id for n in range(3)]
    for run_id in runs:
        await wait_event(dispatcher, run_id, ev.STEP_COMPLETED)  # the first step, then the gate holds
    staying = await spawn_worker()
    leaving.signal(signal.SIGTERM)
    assert await leaving.wait() == 0
    handed_over_at = time.time()
    for run_id in runs:
        second = await wait_event(dispatcher, run_id, ev.RUN_STARTED, attempt=2)
        assert second.data["worker"] == staying.id
        # Released, not timed out: picked up well before a lease would have expired.
        assert second.ts - handed_over_at < LEASE
    for n in range(3):
        await redis.rpush(f"gate:h{n}", "go")
    for run_id in runs:
        assert await dispatcher.result(run_id, timeout=60) == "open"
        events = await events_of(dispatcher, run_id)
        check_stream(events)
        assert [e.step for e in events if e.type == ev.STEP_COMPLETED].count("work#0") == 1


async def test_run_fails_when_attempts_are_exhausted(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    first = await spawn_worker("--max-attempts", "1")
    run_id = (await dispatcher.start(hang, {"tag": "x"})).run_id
    await wait_event(dispatcher, run_id, ev.STEP_STARTED)
    first.signal(signal.SIGKILL)
    await first.wait()
    await spawn_worker("--max-attempts", "1")
    failed = await wait_event(dispatcher, run_id, ev.RUN_FAILED)
    assert failed.data["reason"] == "attempts_exhausted"
    assert failed.data["lost_workers"] == [first.id]
    record = await dispatcher.store.get_run(run_id)
    assert record.status == "failed"
    assert record.error is not None
    assert first.id in record.error["message"] or record.error["lost_workers"] == [first.id]


async def test_cancel_running_queued_and_finished_runs(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    queued = (await dispatcher.start(hang, {"tag": "q"})).run_id
    assert (await dispatcher.cancel(queued)).status == "cancelled"
    await spawn_worker()
    running = (await dispatcher.start(hang, {"tag": "r"})).run_id
    await wait_event(dispatcher, running, ev.STATUS)  # the step is waiting inside its try block
    answer = await dispatcher.cancel(running)
    assert answer.status == "cancelling"
    cancelled = await wait_event(dispatcher, running, ev.RUN_CANCELLED)
    assert cancelled.attempt == 1
    events = await events_of(dispatcher, running)
    assert any(e.type == ev.STEP_FAILED and e.data.get("cancelled") for e in events)
    assert await redis.get("cancelled:r") == b"1"  # the step saw CancelledError
    # The queued one never started, even with a worker up now.
    record = await dispatcher.store.get_run(queued)
    assert record.status == "cancelled"
    assert await redis.get("ran:q:hang") is None
    again = await dispatcher.cancel(running)
    assert (again.status, again.already) == ("cancelled", True)
