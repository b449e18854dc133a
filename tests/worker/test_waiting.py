"""Waiting semantics with an in-process worker on a real server: timeouts, live delivery,
cancellation cascades, failed children, drains, replay and the restart budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store import keys
from outlast.store.embedded import EmbeddedServer
from outlast.worker import Worker

from .test_faults import events_of, wait_event

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]

# Set by the tests, awaited by the ``held`` component: in-process, so no polling is needed.
gates: dict[str, asyncio.Event] = {}


class Decision(BaseModel):
    ok: bool


@outlast.component
async def held(tag: str) -> str:
    await gates[tag].wait()
    return "done"


@outlast.workflow
async def busy_while_waiting(tag: str) -> list[Any]:
    """A step keeps running while the input is requested: the run stays live, not suspended."""
    decision, step = await outlast.gather(outlast.wait_for_input("go", Decision), held(tag))
    return [decision.ok, step]


@outlast.workflow
async def short_timeout(default: bool) -> str:
    kwargs: dict[str, Any] = {"default": "fallback"} if default else {}
    try:
        value = await outlast.wait_for_input("go", timeout=0.3, **kwargs)
    except outlast.InputTimeout:
        return "raised"
    return str(value)


@outlast.workflow
async def sleeper(seconds: float) -> str:
    await outlast.sleep(seconds)
    return "woke"


@outlast.workflow
async def many_waits(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += int(await outlast.wait_for_input(f"n{i}"))
    return total


@outlast.workflow
async def child_waits() -> str:
    return str(await outlast.wait_for_input("never"))


@outlast.workflow
async def parent_of_waiter() -> str:
    return await outlast.run_child(child_waits)


@outlast.workflow
async def broken() -> int:
    raise RuntimeError("child broke")


@outlast.workflow
async def parent_catches() -> str:
    try:
        await outlast.run_child(broken)
    except outlast.ChildFailed as exc:
        return f"child {exc.status}"
    return "unexpected"


@outlast.workflow
async def secret_login(tag: str) -> int:
    """A secret input, asked for while a step runs (tag) or alone (the run suspends)."""
    ask = outlast.wait_for_input("token", prompt="Paste the API token", secret=True)
    token = (await outlast.gather(ask, held(tag)))[0] if tag else await ask
    outlast.status(f"logged in with {token}")
    return len(token)


@outlast.workflow
async def fan_out(naps: list[float]) -> list[str]:
    return await outlast.gather(*(outlast.run_child(sleeper, {"seconds": nap}) for nap in naps))


ALL = [busy_while_waiting, short_timeout, sleeper, many_waits, child_waits, parent_of_waiter, broken,
       parent_catches, secret_login, fan_out]  # fmt: skip


@asynccontextmanager
async def running(redis: aioredis.Redis, **options: Any) -> AsyncIterator[Worker]:
    worker = Worker(ALL, redis, heartbeat=0.2, lease_timeout=1.0, version="waits", **options)
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    try:
        yield worker
    finally:
        worker.stop()
        await task


@pytest.fixture
def dispatcher(redis: aioredis.Redis) -> Dispatcher:
    return Dispatcher(redis)


def types_of(events: list[ev.Event]) -> list[str]:
    return [e.type for e in events]


async def test_input_for_a_live_run_is_delivered_without_suspending(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    gates["live"] = asyncio.Event()
    async with running(redis):
        run_id = (await dispatcher.start(busy_while_waiting, {"tag": "live"}, version="waits")).run_id
        await wait_event(dispatcher, run_id, ev.INPUT_REQUESTED)
        assert await dispatcher.supply_input(run_id, "go", {"ok": True}) == "delivered"
        gates["live"].set()
        assert await dispatcher.result(run_id, timeout=10) == [True, "done"]
    events = await events_of(dispatcher, run_id)
    assert ev.RUN_WAITING not in types_of(events)
    received = [e for e in events if e.type == ev.INPUT_RECEIVED]
    assert len(received) == 1  # written by the live attempt, once
    assert received[0].attempt == 1


async def test_a_live_run_hears_of_its_input_at_once_not_at_its_next_poll(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    # The settler publishes the run on the settled channel; its worker reads the wait then.
    # With a poll of a minute, only that notice can bring input.received while the step runs.
    gates["notice"] = asyncio.Event()
    async with running(redis) as worker:
        worker.runner.wait_poll = 60.0
        run_id = (await dispatcher.start(busy_while_waiting, {"tag": "notice"}, version="waits")).run_id
        await wait_event(dispatcher, run_id, ev.INPUT_REQUESTED)
        assert await dispatcher.supply_input(run_id, "go", {"ok": False}) == "delivered"
        received = await asyncio.wait_for(wait_event(dispatcher, run_id, ev.INPUT_RECEIVED), 20)
        assert received.attempt == 1
        assert not gates["notice"].is_set()  # the step was still running: the run stayed live
        gates["notice"].set()
        assert await dispatcher.result(run_id, timeout=10) == [False, "done"]


@pytest.mark.parametrize("default", [True, False])
async def test_a_short_timeout_is_held_in_memory_and_fires(
    redis: aioredis.Redis, dispatcher: Dispatcher, default: bool
) -> None:
    async with running(redis):
        run_id = (await dispatcher.start(short_timeout, {"default": default}, version="waits")).run_id
        assert await dispatcher.result(run_id, timeout=10) == ("fallback" if default else "raised")
    events = await events_of(dispatcher, run_id)
    assert ev.RUN_WAITING not in types_of(events)  # 0.3 s is within the runner's hold
    assert ev.INPUT_TIMEOUT in types_of(events)
    assert await redis.zcard(keys.TIMERS) == 0  # its timer was removed once it fired
    with pytest.raises(outlast.NotWaiting, match="completed"):
        await dispatcher.supply_input(run_id, "go", 1)


async def test_input_racing_its_timeout_is_settled_once(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    async with running(redis):
        run_id = (await dispatcher.start(short_timeout, {"default": True}, version="waits")).run_id
        await wait_event(dispatcher, run_id, ev.INPUT_REQUESTED)
        try:
            await dispatcher.supply_input(run_id, "go", "typed")
            expected = "typed"
        except outlast.NotWaiting:
            expected = "fallback"  # the timeout settled it first
        assert await dispatcher.result(run_id, timeout=10) == expected
    settled = [
        e.type for e in await events_of(dispatcher, run_id) if e.type in (ev.INPUT_RECEIVED, ev.INPUT_TIMEOUT)
    ]
    assert len(settled) == 1


async def test_resumes_do_not_count_as_restarts(redis: aioredis.Redis, dispatcher: Dispatcher) -> None:
    async with running(redis, max_attempts=2):
        run_id = (await dispatcher.start(many_waits, {"rounds": 4}, version="waits")).run_id
        for i in range(4):
            await wait_event(dispatcher, run_id, ev.RUN_WAITING, attempt=i + 1)
            assert await dispatcher.supply_input(run_id, f"n{i}", i + 1) == "resumed"
        assert await dispatcher.result(run_id, timeout=10) == 1 + 2 + 3 + 4
    record = await dispatcher.store.get_run(run_id)
    assert (record.attempt, record.resumes) == (5, 4)


async def test_cancelling_a_parent_cancels_its_waiting_child(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    async with running(redis):
        parent = (await dispatcher.start(parent_of_waiter, version="waits")).run_id
        child = (await wait_event(dispatcher, parent, ev.CHILD_STARTED)).data["child_run_id"]
        await wait_event(dispatcher, child, ev.RUN_WAITING)
        await wait_event(dispatcher, parent, ev.RUN_WAITING)
        assert (await dispatcher.cancel(parent)).status == "cancelled"
        assert (await dispatcher.wait(child, timeout=10)).status == "cancelled"
        assert (await dispatcher.wait(parent, timeout=10)).status == "cancelled"


async def test_a_fan_out_parent_lingers_while_its_children_end(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    # Children ending one by one must not park and replay the parent once each (N replays of
    # N checkpoints): while they keep ending within `hold` of each other it stays live. Here
    # they end 0.2 s apart; a parent that parked at once would be resumed five times.
    naps = [0.2, 0.4, 0.6, 0.8, 1.0]
    async with running(redis, hold=5.0):
        parent = (await dispatcher.start(fan_out, {"naps": naps}, version="waits")).run_id
        assert await dispatcher.result(parent, timeout=20) == ["woke"] * len(naps)
    events = await events_of(dispatcher, parent)
    assert types_of(events).count(ev.CHILD_COMPLETED) == len(naps)
    assert ev.RUN_WAITING not in types_of(events)
    assert types_of(events).count(ev.RUN_STARTED) == 1


async def test_a_fan_out_parent_on_a_full_worker_parks_at_once(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    # Lingering needs a spare slot: on a worker of concurrency 1 a parent that lingered (here
    # for up to 30 s) would keep its children from ever running there.
    async with running(redis, hold=30.0, concurrency=1):
        parent = (await dispatcher.start(fan_out, {"naps": [0.1, 0.1]}, version="waits")).run_id
        assert await dispatcher.result(parent, timeout=20) == ["woke", "woke"]
    assert ev.RUN_WAITING in types_of(await events_of(dispatcher, parent))


async def test_a_failed_child_raises_in_its_parent(redis: aioredis.Redis, dispatcher: Dispatcher) -> None:
    async with running(redis):
        parent = (await dispatcher.start(parent_catches, version="waits")).run_id
        assert await dispatcher.result(parent, timeout=10) == "child failed"
    completed = next(e for e in await events_of(dispatcher, parent) if e.type == ev.CHILD_COMPLETED)
    assert completed.data == {"child_run_id": f"{parent}.c0", "status": "failed"}


async def test_a_draining_worker_parks_runs_that_only_wait(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    worker = Worker(ALL, redis, heartbeat=0.2, lease_timeout=1.0, version="waits", drain_timeout=30)
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    run_id = (await dispatcher.start(sleeper, {"seconds": 0.9}, version="waits")).run_id
    await wait_event(dispatcher, run_id, ev.SLEEP_STARTED)  # held in memory: 0.9 s is within hold
    worker.stop()
    await asyncio.wait_for(task, 5)  # not held for the whole drain timeout
    assert (await dispatcher.store.get_run(run_id)).status in ("waiting", "queued")
    async with running(redis):
        assert await dispatcher.result(run_id, timeout=10) == "woke"


@outlast.workflow(name="changing")
async def changing_v1() -> str:
    return str(await outlast.wait_for_input("first"))


@outlast.workflow(name="changing")
async def changing_v2() -> str:
    await outlast.sleep(1)  # a deploy put a different wait at the recorded position
    return "?"


async def test_replay_that_waits_on_something_else_is_non_deterministic(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    run_id = (await dispatcher.start(changing_v1, version="v1")).run_id
    one = Worker([changing_v1], redis, heartbeat=0.2, lease_timeout=1.0, version="v1")
    task = asyncio.create_task(one.run())
    await wait_event(dispatcher, run_id, ev.RUN_WAITING)
    one.stop()
    await task
    await dispatcher.supply_input(run_id, "first", "x")
    await Worker([changing_v2], redis, heartbeat=0.2, lease_timeout=1.0, version="v1").run_until_idle()
    record = await dispatcher.store.get_run(run_id)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error["reason"] == "non_determinism"


@pytest.mark.parametrize("live", [True, False])
async def test_a_secret_input_is_masked_in_the_stream_whoever_writes_it(
    redis: aioredis.Redis, dispatcher: Dispatcher, live: bool
) -> None:
    token = "tok-0123456789abcdef"
    tag = "secret" if live else ""
    gates["secret"] = asyncio.Event()
    async with running(redis):
        run_id = (await dispatcher.start(secret_login, {"tag": tag}, version="waits")).run_id
        requested = await wait_event(dispatcher, run_id, ev.INPUT_REQUESTED)
        assert requested.data["secret"] is True
        assert [w["secret"] for w in await dispatcher.pending_waits(run_id)] == [True]
        if not live:
            await wait_event(dispatcher, run_id, ev.RUN_WAITING)  # RESOLVE writes input.received
        outcome = await dispatcher.supply_input(run_id, "token", token)
        assert outcome == ("delivered" if live else "resumed")
        gates["secret"].set()
        assert await dispatcher.result(run_id, timeout=10) == len(token)  # the real value
    events = await events_of(dispatcher, run_id)
    received = [e for e in events if e.type == ev.INPUT_RECEIVED]
    assert [e.data["value"] for e in received] == ["[secret]"]
    assert [e.data["message"] for e in events if e.type == ev.STATUS] == ["logged in with [secret]"]
    assert token not in str([e.data for e in events])
    assert (await dispatcher.store.get_run(run_id)).status_message == "logged in with [secret]"


async def test_the_notice_listener_comes_back_after_the_server_restarts(tmp_path: Path) -> None:
    # Only the settled-wait notice can bring the input while the step runs (a poll of a minute):
    # after a Valkey restart under a live worker, its listener must have subscribed again.
    server = EmbeddedServer(tmp_path / "restart").start()
    client = aioredis.Redis.from_url(server.url)
    dispatcher = Dispatcher(client)
    gates["relisten"] = asyncio.Event()
    try:
        async with running(client) as worker:
            worker.runner.wait_poll = 60.0
            server.kill()  # SIGKILL: AOF (everysec) has every acknowledged write
            server.start()
            run_id = (await dispatcher.start(busy_while_waiting, {"tag": "relisten"}, version="waits")).run_id
            await asyncio.wait_for(wait_event(dispatcher, run_id, ev.INPUT_REQUESTED), 30)
            assert await dispatcher.supply_input(run_id, "go", {"ok": True}) == "delivered"
            received = await asyncio.wait_for(wait_event(dispatcher, run_id, ev.INPUT_RECEIVED), 20)
            assert received.attempt == 1
            gates["relisten"].set()
            assert await dispatcher.result(run_id, timeout=10) == [True, "done"]
    finally:
        await client.aclose()
        server.stop()
