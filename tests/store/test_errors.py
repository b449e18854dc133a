"""redis-py errors at the store's boundary: mapped into the OutlastError tree, reply codes
recognised by one helper (against a real server's replies)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

import outlast
from outlast import events as ev
from outlast.errors import RunEnded, RunWaiting, StoreError
from outlast.store.base import RunStore
from outlast.store.errors import BUSYGROUP, NOGROUP, guard, reply_code
from outlast.store.memory import MemoryStore
from outlast.store.redis import RedisStore

pytestmark = pytest.mark.cluster


async def test_busygroup_and_nogroup_are_recognised_raw_and_mapped(redis: aioredis.Redis) -> None:
    await redis.xgroup_create("s", "g", id="0", mkstream=True)
    with pytest.raises(redis_errors.ResponseError) as raw:
        await redis.xgroup_create("s", "g", id="0", mkstream=True)
    assert reply_code(raw.value) == BUSYGROUP
    with pytest.raises(StoreError) as mapped:
        await guard(redis.xgroup_create("s", "g", id="0", mkstream=True))
    assert reply_code(mapped.value) == BUSYGROUP  # through the mapped error's cause

    with pytest.raises(redis_errors.ResponseError) as missing:
        await redis.xreadgroup("nope", "c", {"s": ">"}, count=1)
    assert reply_code(missing.value) == NOGROUP


async def test_other_errors_have_no_reply_code(redis: aioredis.Redis) -> None:
    await redis.set("k", "v")
    with pytest.raises(StoreError) as wrong_type:
        await guard(redis.lpush("k", "x"))  # WRONGTYPE: a code, but not a group one
    assert reply_code(wrong_type.value) == "WRONGTYPE"
    with pytest.raises(StoreError) as plain:
        await guard(redis.execute_command("NOSUCHCOMMAND"))  # "ERR unknown command": redis-py strips ERR
    assert reply_code(plain.value) == ""
    assert reply_code(ValueError("BUSYGROUP lookalike")) == ""


@outlast.workflow
async def quick() -> str:
    return "done"


@outlast.workflow
async def asks() -> str:
    return str(await outlast.wait_for_input("answer"))


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: aioredis.Redis) -> RunStore:
    return MemoryStore() if request.param == "memory" else RedisStore(redis)


async def test_an_ended_run_refuses_another_attempt_with_run_ended(store: RunStore) -> None:
    runner = outlast.Runner(store)
    run_id = await runner.start(quick, {})
    await runner.execute(quick, run_id)
    with pytest.raises(RunEnded, match=r"already ended \(completed\)") as ended:
        await store.begin_attempt(run_id)
    assert (ended.value.run_id, ended.value.status) == (run_id, "completed")


async def test_a_suspended_run_refuses_an_attempt_with_run_waiting(redis: aioredis.Redis) -> None:
    runner = outlast.Runner(RedisStore(redis), hold=0)
    run_id = await runner.start(asks, {})
    assert (await runner.execute(asks, run_id)).status == "suspended"
    with pytest.raises(RunWaiting, match="is waiting"):
        await runner.store.begin_attempt(run_id)


async def test_an_event_after_the_terminal_one_fails_with_run_ended_not_a_serialization_error() -> None:
    store = MemoryStore()
    runner = outlast.Runner(store)
    run_id = await runner.start(quick, {})
    attempt = await runner.begin(quick, run_id)
    await attempt.run()
    with pytest.raises(RunEnded):
        await attempt.writer.commit(ev.STATUS, None, {"message": "too late"})
    assert [e.type for e in await collect(store, run_id)][-1] == ev.RUN_COMPLETED


async def collect(store: RunStore, run_id: str) -> list[ev.Event]:
    return [e async for e in store.read_events(run_id, follow=False)]
