"""CLAIM, one test per outcome: claimed fresh, refused while leased, taken over after the lease
expired (or was released), run already terminal, cancelled, attempts exhausted, waiting, gone."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast import serde
from outlast.errors import StaleAttemptError
from outlast.store.base import OP_META, OP_OBJECT, OP_STEP, OP_WAIT, AppendItem, NewRun
from outlast.store.commands import server_ms
from outlast.store.leases import Claim, RunLeases
from outlast.store.redis import RedisStore
from outlast.store.waits import RedisWaits

pytestmark = [pytest.mark.redis7, pytest.mark.cluster]

LEASE_MS = 60_000


def envelope(seq: int, type: str = ev.STATUS, attempt: int = 1) -> bytes:
    return serde.dumps(
        ev.envelope(seq=seq, type=type, run_id="r1", attempt=attempt, step=None, ts=time.time(), data={})
    )


async def queued_run(redis: aioredis.Redis) -> tuple[RedisStore, RunLeases]:
    store = RedisStore(redis)
    run = NewRun(run_id="r1", workflow="wf", input={"x": 1})
    assert await store.create_run(run, run.queued_event())
    return store, RunLeases(redis)


async def expired(redis: aioredis.Redis, claim: Claim) -> None:
    """Let the claim's (1 ms) lease run out on the server's clock: expiry is a matter of time."""
    left_ms = claim.lease_until - await server_ms(redis)
    await asyncio.sleep(max(0, left_ms + 2) / 1000)
    assert await server_ms(redis) > claim.lease_until


async def test_a_queued_run_is_claimed_fresh_with_a_lease(redis: aioredis.Redis) -> None:
    _, leases = await queued_run(redis)
    before = await server_ms(redis)
    claim = await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)
    assert (claim.status, claim.attempt, claim.last_seq) == ("ok", 1, 1)
    assert before + LEASE_MS <= claim.lease_until <= await server_ms(redis) + LEASE_MS
    assert claim.record is not None
    assert (claim.record.status, claim.record.attempt, claim.record.lease_owner) == ("running", 1, "w1")
    assert (claim.record.input, claim.record.lost_workers) == ({"x": 1}, "")
    assert (claim.steps, claim.objects, claim.waits) == ({}, {}, {})


async def test_a_live_lease_refuses_another_claim(redis: aioredis.Redis) -> None:
    store, leases = await queued_run(redis)
    first = await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)
    refused = await leases.claim("r1", "w2", LEASE_MS, max_attempts=3)
    assert (refused.status, refused.lease_until, refused.record) == ("alive", first.lease_until, None)
    record = await store.get_run("r1")
    assert (record.attempt, record.lease_owner) == (1, "w1")


async def test_an_expired_lease_is_taken_over_with_the_runs_state(redis: aioredis.Redis) -> None:
    store, leases = await queued_run(redis)
    first = await leases.claim("r1", "w1", 1, max_attempts=3)
    ops = ((OP_STEP, "0", b'{"done":1}'), (OP_OBJECT, "doc", b'{"a":1}'), (OP_WAIT, "1", b'{"kind":"sleep"}'))
    await store.append("r1", 1, [AppendItem(2, envelope(2), ops)])
    await expired(redis, first)

    taken = await leases.claim("r1", "w2", LEASE_MS, max_attempts=3)
    assert (taken.status, taken.attempt, taken.last_seq) == ("ok", 2, 2)
    assert taken.record is not None
    assert (taken.record.lease_owner, taken.record.lost_workers) == ("w2", "w1")
    assert taken.steps == {"0": b'{"done":1}'}
    assert (taken.objects, taken.waits) == ({"doc": {"a": 1}}, {"1": b'{"kind":"sleep"}'})
    with pytest.raises(StaleAttemptError):  # the first worker, waking up, is fenced off
        await store.append("r1", 1, [AppendItem(3, envelope(3))])
    assert not await leases.release("r1", 1, "w1")
    assert await leases.renew("r1", 1, "w1", LEASE_MS) == (False, 0, False)


async def test_a_released_lease_is_taken_over_at_once_without_counting_a_loss(redis: aioredis.Redis) -> None:
    _, leases = await queued_run(redis)
    await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)
    assert await leases.release("r1", 1, "w1")
    taken = await leases.claim("r1", "w2", LEASE_MS, max_attempts=3)
    assert (taken.status, taken.attempt) == ("ok", 2)
    assert taken.record is not None
    assert taken.record.lost_workers == ""


async def test_a_heartbeat_landing_after_a_release_does_not_revive_the_lease(redis: aioredis.Redis) -> None:
    # The heartbeat thread renews from a list of leases it read a moment earlier: during a drain
    # its RENEW can reach the server just after the worker's RELEASE. It must not revive the
    # lease: the next worker would then find it alive, wait out the lease timeout and count the
    # drain's clean hand-off as a lost worker (max_attempts).
    _, leases = await queued_run(redis)
    await leases.claim("r1", "w1", LEASE_MS, max_attempts=1)
    assert await leases.release("r1", 1, "w1")
    assert await leases.renew("r1", 1, "w1", LEASE_MS) == (False, 0, False)
    taken = await leases.claim("r1", "w2", LEASE_MS, max_attempts=1)
    assert (taken.status, taken.attempt, taken.detail) == ("ok", 2, "")
    assert taken.record is not None
    assert (taken.record.lost_workers, taken.record.losses) == ("", 0)


async def test_a_finished_run_is_not_claimed(redis: aioredis.Redis) -> None:
    store, leases = await queued_run(redis)
    await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)  # the lease is still live
    done = ((OP_META, "status", "completed"),)
    await store.append("r1", 1, [AppendItem(2, envelope(2, ev.RUN_COMPLETED), done)])
    claim = await leases.claim("r1", "w2", LEASE_MS, max_attempts=3)
    assert (claim.status, claim.detail) == ("terminal", "completed")
    assert (await store.get_run("r1")).attempt == 1


async def test_attempts_exhausted_after_lost_leases(redis: aioredis.Redis) -> None:
    store, leases = await queued_run(redis)
    first = await leases.claim("r1", "w1", 1, max_attempts=2)
    await expired(redis, first)
    second = await leases.claim("r1", "w2", 1, max_attempts=2)
    assert (second.status, second.attempt) == ("ok", 2)
    await expired(redis, second)
    claim = await leases.claim("r1", "w3", LEASE_MS, max_attempts=2)
    assert (claim.status, claim.attempt, claim.detail) == ("exhausted", 2, "w1,w2")
    record = await store.get_run("r1")
    assert (record.attempt, record.lost_workers) == (2, "w1,w2")  # the fence did not move
    # The caller ends the run (FINISH takes the fence from the attempt the claim reported).
    error = {"type": "AttemptsExhausted", "message": "lost", "reason": "attempts_exhausted"}
    data = {"error": error, "reason": "attempts_exhausted", "lost_workers": ["w1", "w2"]}
    assert await leases.finish("r1", claim.attempt, "failed", ev.RUN_FAILED, data, error) == ("ok", 2)
    events = [e async for e in store.read_events("r1", follow=False)]
    assert [(e.seq, e.type, e.attempt) for e in events] == [(1, ev.RUN_QUEUED, 0), (2, ev.RUN_FAILED, 3)]
    assert events[1].data == data


async def test_unlimited_attempts_never_exhaust(redis: aioredis.Redis) -> None:
    _, leases = await queued_run(redis)
    for attempt in range(1, 4):
        claim = await leases.claim("r1", f"w{attempt}", 1, max_attempts=0)
        assert (claim.status, claim.attempt) == ("ok", attempt)
        await expired(redis, claim)


async def test_a_cancelled_run_is_claimed_by_nobody(redis: aioredis.Redis) -> None:
    _, leases = await queued_run(redis)
    assert await leases.request_cancel("r1") == ("unleased", 0)
    claim = await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)
    assert (claim.status, claim.attempt) == ("cancelled", 0)


async def test_a_cancel_request_on_a_live_lease_is_left_to_its_worker(redis: aioredis.Redis) -> None:
    _, leases = await queued_run(redis)
    first = await leases.claim("r1", "w1", LEASE_MS, max_attempts=3)
    assert await leases.request_cancel("r1") == ("leased", 1)
    claim = await leases.claim("r1", "w2", LEASE_MS, max_attempts=3)
    assert (claim.status, claim.lease_until) == ("alive", first.lease_until)
    still_ours, _, cancel_requested = await leases.renew("r1", 1, "w1", LEASE_MS)
    assert (still_ours, cancel_requested) == (True, True)  # its worker learns of it at renewal


async def test_a_waiting_run_is_not_claimed_and_its_resumes_do_not_count(redis: aioredis.Redis) -> None:
    store, leases = await queued_run(redis)
    waits = RedisWaits(redis)
    await leases.claim("r1", "w1", LEASE_MS, max_attempts=1)
    record = {"kind": "input", "key": "ok", "name": "input:ok", "step_id": "input:ok#0", "created": 1}
    await store.append(
        "r1", 1, [AppendItem(2, envelope(2, ev.INPUT_REQUESTED), ((OP_WAIT, "0", json.dumps(record)),))]
    )
    assert await waits.suspend("r1", 1, AppendItem(3, envelope(3, ev.RUN_WAITING)), ["0"]) == "ok"
    claim = await leases.claim("r1", "w2", LEASE_MS, max_attempts=1)
    assert claim.status == "waiting"

    assert await waits.supply_input("r1", "ok", True) == "resumed"  # the run is queued again
    resumed = await leases.claim("r1", "w2", LEASE_MS, max_attempts=1)
    assert (resumed.status, resumed.attempt, resumed.last_seq) == ("ok", 2, 4)  # a resume, not a restart
    assert resumed.record is not None
    assert (resumed.record.resumes, resumed.record.lost_workers) == (1, "")


async def test_an_unknown_run_is_gone(redis: aioredis.Redis) -> None:
    claim = await RunLeases(redis).claim("nope", "w1", LEASE_MS, max_attempts=3)
    assert claim.status == "gone"
