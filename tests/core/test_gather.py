"""Concurrency: ``gather`` (call order, limits, fail-fast; plain and in a run) and cancelling a run."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

import outlast
from outlast import component, gather, workflow
from outlast import events as ev

pytestmark = pytest.mark.cluster


class Chain:
    """Makes call ``i`` wait for call ``i + 1`` to finish, so calls finish in reverse order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = [asyncio.Event() for _ in range(n)]
        self.finished: list[int] = []

    async def step(self, i: int) -> str:
        if i + 1 < self.n:
            await self.done[i + 1].wait()
        self.finished.append(i)
        self.done[i].set()
        return f"r{i}"


class Gauge:
    """Counts calls running at once and releases them only once ``limit`` are in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.peak = 0
        self.calls = 0
        self.full = asyncio.Event()

    async def run(self, i: int) -> int:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active >= self.limit:
            self.full.set()
        try:
            await self.full.wait()
            for _ in range(3):  # let every other ready task run: an unbounded gather would overshoot
                await asyncio.sleep(0)
            return i * i
        finally:
            self.active -= 1


# -- plain (outside a run) ----------------------------------------------------------------------


async def test_results_keep_call_order_when_later_calls_finish_first() -> None:
    chain = Chain(5)

    @component
    async def work(i: int) -> str:
        return await chain.step(i)

    results = await gather(*(work(i) for i in range(5)))
    assert chain.finished == [4, 3, 2, 1, 0]
    assert results == ["r0", "r1", "r2", "r3", "r4"]


async def test_limit_bounds_concurrency_exactly() -> None:
    gauge = Gauge(3)

    @component
    async def work(i: int) -> int:
        return await gauge.run(i)

    results = await gather(*(work(i) for i in range(20)), limit=3)
    assert results == [i * i for i in range(20)]
    assert gauge.calls == 20
    assert gauge.peak == 3
    assert gauge.active == 0


async def test_without_limit_all_calls_run_at_once() -> None:
    gauge = Gauge(20)

    @component
    async def work(i: int) -> int:
        return await gauge.run(i)

    assert await gather(*(work(i) for i in range(20))) == [i * i for i in range(20)]
    assert gauge.peak == 20


async def test_first_failure_cancels_the_others_and_is_raised() -> None:
    started = 0
    all_started = asyncio.Event()
    never = asyncio.Event()
    cancelled: list[int] = []
    finished: list[int] = []

    @component
    async def work(i: int) -> int:
        nonlocal started
        started += 1
        if started == 4:
            all_started.set()
        if i == 2:
            await all_started.wait()
            raise ValueError("call 2 failed")
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="call 2 failed"):
        await gather(*(work(i) for i in range(4)))
    assert sorted(cancelled) == [0, 1, 3]
    assert finished == []


async def test_failure_cancels_calls_still_waiting_for_a_slot() -> None:
    ran: list[int] = []

    @component
    async def work(i: int) -> int:
        ran.append(i)
        if i == 0:
            raise RuntimeError("boom")
        await asyncio.Event().wait()
        return i

    with pytest.raises(RuntimeError, match="boom"):
        await gather(*(work(i) for i in range(6)), limit=2)
    assert 0 in ran
    assert len(ran) < 6  # queued calls never started once the failure was seen


async def test_return_exceptions_returns_errors_in_place() -> None:
    @component
    async def work(i: int) -> int:
        if i % 2:
            raise KeyError(f"odd {i}")
        return i

    results = await gather(*(work(i) for i in range(5)), return_exceptions=True)
    assert [results[0], results[2], results[4]] == [0, 2, 4]
    for i in (1, 3):
        assert isinstance(results[i], KeyError)
        assert str(i) in str(results[i])


@pytest.mark.parametrize("limit", [0, -1])
async def test_limit_must_be_positive(limit: int) -> None:
    @component
    async def work(i: int) -> int:
        return i

    with pytest.raises(outlast.ConfigError):
        await gather(work(1), limit=limit)


async def test_gather_of_nothing_is_an_empty_list() -> None:
    # e.g. gather(*(write(s) for s in sections)) with no sections, as asyncio.gather() allows
    assert await gather() == []
    assert await gather(limit=2) == []


async def test_gather_accepts_plain_coroutines() -> None:
    async def plain(i: int) -> int:
        return i + 1

    assert await gather(plain(1), plain(2), limit=1) == [2, 3]


# -- inside a run -------------------------------------------------------------------------------


async def test_in_a_run_step_ids_follow_call_order_not_completion_order() -> None:
    chain = Chain(6)

    @component
    async def write(i: int) -> str:
        return await chain.step(i)

    @workflow(name="gather-order")
    async def wf(n: int) -> list[str]:
        return await gather(*(write(i) for i in range(n)), limit=None)

    run = await outlast.run_local(wf, {"n": 6})
    assert run.status == "completed"
    assert run.result == [f"r{i}" for i in range(6)]
    assert chain.finished == [5, 4, 3, 2, 1, 0]

    started = [e for e in run.events if e.type == "step.started"]
    assert [e.step for e in started] == [f"write#{i}" for i in range(6)]
    assert [e.data["args"] for e in started] == [{"i": i} for i in range(6)]
    assert [e.data["position"] for e in started] == [str(i) for i in range(6)]

    completed = [e for e in run.events if e.type == "step.completed"]
    assert [e.step for e in completed] == [f"write#{i}" for i in reversed(range(6))]
    assert {e.step: e.data["result"] for e in completed} == {f"write#{i}": f"r{i}" for i in range(6)}


async def test_in_a_run_limit_bounds_concurrency() -> None:
    gauge = Gauge(3)

    @component
    async def square(i: int) -> int:
        return await gauge.run(i)

    @workflow(name="gather-limit")
    async def wf(n: int) -> list[int]:
        return await gather(*(square(i) for i in range(n)), limit=3)

    run = await outlast.run_local(wf, {"n": 20})
    assert run.status == "completed"
    assert run.result == [i * i for i in range(20)]
    assert gauge.peak == 3
    ids = {e.step for e in run.events if e.type == "step.completed"}
    assert ids == {f"square#{i}" for i in range(20)}


async def test_in_a_run_failure_cancels_siblings_and_fails_the_run() -> None:
    entered = 0
    all_in = asyncio.Event()
    cancelled: list[int] = []

    @component
    async def write(i: int) -> int:
        nonlocal entered
        entered += 1
        if entered == 3:
            all_in.set()
        if i == 1:
            await all_in.wait()
            raise ValueError("write 1 failed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    @workflow(name="gather-fail")
    async def wf() -> list[int]:
        return await gather(write(0), write(1), write(2))

    run = await outlast.run_local(wf, {})
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["type"] == "ValueError"
    assert sorted(cancelled) == [0, 2]
    failed = {e.step: e.data for e in run.events if e.type == "step.failed"}
    error = dict(failed["write#1"]["error"])
    assert error.pop("traceback").endswith("ValueError: write 1 failed\n")
    assert error == {"type": "ValueError", "message": "write 1 failed"}
    assert failed["write#0"]["cancelled"] is True
    assert failed["write#2"]["cancelled"] is True
    assert run.events[-1].type == "run.failed"


async def test_a_step_cancelled_while_its_commit_is_in_flight_is_not_run_again(redis: aioredis.Redis) -> None:
    ran = {"a": 0, "b": 0}

    @outlast.component
    async def a() -> int:
        ran["a"] += 1
        return 1

    @outlast.component
    async def b() -> int:
        ran["b"] += 1
        if ran["b"] == 1:
            raise ConnectionError("first try fails")
        return 2

    @outlast.workflow(retry=outlast.Retry(attempts=2, backoff_base=0, jitter=False))
    async def pair() -> list[int]:
        return await outlast.gather(a(), b())  # b's failure cancels a while a commits

    store = outlast.RedisStore(redis)  # a real round trip: the cancellation lands mid-commit
    runner = outlast.Runner(store)
    run_id = await runner.start(pair)
    outcome = await runner.execute(pair, run_id)
    assert (outcome.status, outcome.result) == ("completed", [1, 2])
    assert ran["a"] == 1
    events = [e async for e in store.read_events(run_id, follow=False)]
    assert [e.step for e in events if e.type == ev.STEP_COMPLETED].count("a#0") == 1


async def test_in_a_run_return_exceptions() -> None:
    @component
    async def write(i: int) -> int:
        if i == 1:
            raise KeyError("one")
        return i

    @workflow(name="gather-return-exceptions")
    async def wf() -> list[str]:
        results = await gather(write(0), write(1), write(2), return_exceptions=True)
        return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]

    run = await outlast.run_local(wf, {})
    assert run.status == "completed"
    assert run.result == ["0", "KeyError", "2"]
    assert [e.step for e in run.events if e.type == "step.failed"] == ["write#1"]


# -- cancellation -------------------------------------------------------------------------------


async def test_cancel_reaches_the_running_step() -> None:
    started = asyncio.Event()
    saw: list[str] = []

    @component
    async def slow(x: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw.append("cancelled")
            raise
        return x

    @workflow(name="cancellable")
    async def wf(x: int) -> int:
        return await slow(x)

    store = outlast.MemoryStore()
    runner = outlast.Runner(store)
    run_id = await runner.start(wf, {"x": 1})
    attempt = await runner.begin(wf, run_id)
    task = asyncio.create_task(attempt.run())
    await started.wait()
    attempt.cancel("user")
    outcome = await task

    assert outcome.status == "cancelled"
    assert saw == ["cancelled"]
    events = [e async for e in store.read_events(run_id, follow=False)]
    failed = [e for e in events if e.type == "step.failed"]
    assert len(failed) == 1
    assert failed[0].step == "slow#0"
    assert failed[0].data["cancelled"] is True
    assert events[-1].type == "run.cancelled"
    assert events[-1].data["reason"] == "user"
    assert (await store.get_run(run_id)).status == "cancelled"
