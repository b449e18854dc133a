"""A workflow's own retry policy: the body runs again in the same attempt, replaying completed steps."""

from __future__ import annotations

import asyncio

import outlast
from outlast import events as ev


async def test_workflow_retry_replays_completed_steps_and_reruns_the_failed_part() -> None:
    ran = {"fetch": 0, "flaky": 0}

    @outlast.component
    async def fetch() -> int:
        ran["fetch"] += 1
        return 7

    @outlast.component
    async def flaky() -> int:
        ran["flaky"] += 1
        if ran["flaky"] < 3:
            raise ConnectionError(f"boom {ran['flaky']}")
        return 1

    @outlast.workflow(retry=outlast.Retry(attempts=3, backoff_base=0.001, jitter=False))
    async def retried() -> int:
        outlast.status("working")
        return await fetch() + await flaky()

    run = await outlast.run_local(retried)
    assert (run.status, run.result) == ("completed", 8)
    assert ran == {"fetch": 1, "flaky": 3}  # fetch completed once and was replayed twice
    retries = [e for e in run.events if e.type == ev.RUN_RETRYING]
    assert [(e.data["try"], e.data["error"]["message"]) for e in retries] == [(1, "boom 1"), (2, "boom 2")]
    assert [e.type for e in run.events].count(ev.STATUS) == 1  # emissions are not repeated either
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))


async def test_workflow_without_retry_fails_on_the_first_error() -> None:
    @outlast.workflow
    async def fragile() -> None:
        raise ValueError("bad input")

    run = await outlast.run_local(fragile)
    assert run.status == "failed"
    assert run.error is not None
    assert "in fragile" in run.error.pop("traceback")
    assert run.error == {"type": "ValueError", "message": "bad input", "reason": "error"}
    assert not [e for e in run.events if e.type == ev.RUN_RETRYING]


async def test_retry_policy_gives_up_and_cancel_interrupts_the_delay() -> None:
    @outlast.workflow(retry=outlast.Retry(attempts=2, backoff_base=0.001, jitter=False, retry_on=(KeyError,)))
    async def other_error() -> None:
        raise ValueError("not retried")

    run = await outlast.run_local(other_error)
    assert run.status == "failed"

    @outlast.workflow(retry=outlast.Retry(attempts=5, backoff_base=3600, jitter=False))
    async def slow_retry() -> None:
        raise ConnectionError("down")

    store = outlast.MemoryStore()
    runner = outlast.Runner(store)
    run_id = await runner.start(slow_retry)
    attempt = await runner.begin(slow_retry, run_id)
    task = asyncio.create_task(attempt.run())
    async for event in store.read_events(run_id):
        if event.type == ev.RUN_RETRYING:
            break
    attempt.cancel("user")  # during an hour-long retry delay
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.status == "cancelled"


async def test_a_repeated_cancel_does_not_interrupt_the_steps_clean_up() -> None:
    entered, handling, cleaned = asyncio.Event(), asyncio.Event(), asyncio.Event()
    release = asyncio.Event()

    @outlast.component
    async def careful() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            handling.set()
            await release.wait()  # clean-up that itself awaits
            cleaned.set()
            raise

    @outlast.workflow
    async def guarded() -> None:
        await careful()

    runner = outlast.Runner(outlast.MemoryStore())
    run_id = await runner.start(guarded)
    attempt = await runner.begin(guarded, run_id)
    task = asyncio.create_task(attempt.run())
    await entered.wait()
    attempt.cancel("user")
    await handling.wait()  # the first cancellation reached the step's handler
    attempt.cancel("user")  # e.g. the heartbeat noticing the same request
    release.set()
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.status == "cancelled"
    assert cleaned.is_set()
