"""Dispatching in-process: idempotent starts, the registry, versions, burst workers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

import outlast
from outlast.control import Dispatcher
from outlast.errors import ConfigError, OutlastError, WorkflowNotFound
from outlast.store import keys
from outlast.store.client import redis_from_url
from outlast.store.queue import WORK_STREAM_MAXLEN, RunQueue
from outlast.worker import Worker

from .app import quick

pytestmark = pytest.mark.cluster


@outlast.workflow(upgrade_safe=True)
async def portable(n: int) -> int:
    return n * 2


async def test_start_is_idempotent_with_a_key(dispatcher: Dispatcher, redis: aioredis.Redis) -> None:
    first = await dispatcher.start(quick, {"n": 1}, idempotency_key="order-42")
    again = await dispatcher.start(quick, {"n": 1}, idempotency_key="order-42")
    other = await dispatcher.start(quick, {"n": 1}, idempotency_key="order-43")
    assert (first.created, again.created, other.created) == (True, False, True)
    assert again.run_id == first.run_id
    assert other.run_id != first.run_id
    ttl = await redis.ttl(keys.idempotency_key("quick", "order-42"))
    assert 23 * 3600 < ttl <= 24 * 3600
    await Worker([quick], redis).run_until_idle()
    assert await dispatcher.result(first.run_id, timeout=5) == 1
    # Started once: one dispatch entry per created run.
    assert await redis.xlen(keys.work_stream("dev")) == 2


async def test_start_by_name_needs_a_registered_workflow(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    with pytest.raises(WorkflowNotFound, match="no workflow 'quick' in version 'dev'"):
        await dispatcher.start("quick", {"n": 1})
    worker = Worker([quick], redis, version="dev")
    await worker.run_until_idle()  # registers its workflows
    registered = await dispatcher.workflows("dev")
    assert registered["quick"]["input_schema"]["properties"]["n"]["type"] == "integer"
    started = await dispatcher.start("quick", {"n": 2})
    await Worker([quick], redis).run_until_idle()
    assert await dispatcher.result(started.run_id, timeout=5) == 2


async def test_bad_starts_are_refused_before_anything_is_written(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    with pytest.raises(outlast.InputValidationError, match="n"):
        await dispatcher.start(quick, {"n": "lots"})
    with pytest.raises(ConfigError, match="overwrite"):
        await dispatcher.start(quick, {"n": 1}, extra={"status": "completed"})
    with pytest.raises(ConfigError, match="reserved"):
        await dispatcher.start(quick, {"n": 1}, version="@any")
    with pytest.raises(ConfigError, match="run id"):
        await dispatcher.start(quick, {"n": 1}, run_id="has{braces}")
    assert [k async for k in redis.scan_iter("outlast:run:*")] == []
    with pytest.raises(OutlastError, match="reserved"):
        Worker([quick], redis, version="@mine")
    # A retention of 0 would PEXPIRE a finished run's keys at once (and a late field would then
    # live for ever): refused wherever it is given.
    for retention in (0, -1.0, 0.0001, float("nan"), float("inf"), 1e12):
        with pytest.raises(ConfigError, match="retention"):
            Worker([quick], redis, retention=retention)
        with pytest.raises(ConfigError, match="retention"):
            Dispatcher(redis, retention=retention)


async def test_versions_pin_runs_and_deploy_status_reports_them(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    await Worker([quick], redis, version="v1").run_until_idle()
    assert await dispatcher.active_version() == "v1"  # the first version seen becomes active
    on_v1 = await dispatcher.start(quick, {"n": 1})
    assert await dispatcher.promote("v2", force=True) == "v1"  # its workers are about to start
    on_v2 = await dispatcher.start(quick, {"n": 1})
    assert [(await dispatcher.store.get_run(r.run_id)).version for r in (on_v1, on_v2)] == ["v1", "v2"]
    status = await dispatcher.deploy_status()
    assert status["active"] == "v2"
    rows = {row["version"]: row for row in status["versions"]}
    assert rows["v1"]["queued"] == 1  # no v1 worker is running: the run waits, visibly
    assert rows["v1"]["state"] == "draining"
    await Worker([quick], redis, version="v2").run_until_idle()
    assert (await dispatcher.store.get_run(on_v1.run_id)).status == "queued"  # never runs on v2 code
    assert (await dispatcher.store.get_run(on_v2.run_id)).status == "completed"
    await Worker([quick], redis, version="v1").run_until_idle()
    assert (await dispatcher.store.get_run(on_v1.run_id)).status == "completed"
    rows = {row["version"]: row for row in (await dispatcher.deploy_status())["versions"]}
    assert (rows["v1"]["state"], rows["v1"]["in_flight"], rows["v1"]["queued"]) == ("drained", 0, 0)
    assert await dispatcher.rollback() == "v1"
    assert await dispatcher.active_version() == "v1"


async def test_upgrade_safe_runs_go_to_any_version(dispatcher: Dispatcher, redis: aioredis.Redis) -> None:
    started = await dispatcher.start(portable, {"n": 21}, version="v1")
    await Worker([portable], redis, version="v9").run_until_idle()
    assert await dispatcher.result(started.run_id, timeout=5) == 42
    record = await dispatcher.store.get_run(started.run_id)
    assert record.version == "v1"


async def test_cancelling_a_finished_run_is_a_clear_no_op(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    started = await dispatcher.start(quick, {"n": 1})
    await Worker([quick], redis).run_until_idle()
    answer = await dispatcher.cancel(started.run_id)
    assert (answer.status, answer.already) == ("completed", True)
    with pytest.raises(outlast.RunNotFound):
        await dispatcher.cancel("no-such-run")


async def test_a_worker_lacking_the_workflow_leaves_its_runs_for_one_that_has_it(
    dispatcher: Dispatcher, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    started = await dispatcher.start(portable, {"n": 1}, version="v1")
    # A v1 worker deployed without that workflow: it neither fails the run nor takes an attempt.
    await Worker([quick], redis, version="v1").run_until_idle()
    record = await dispatcher.store.get_run(started.run_id)
    assert (record.status, record.attempt, record.losses) == ("queued", 0, 0)
    warnings = [r.getMessage() for r in caplog.records if "has no workflow 'portable'" in r.getMessage()]
    assert len(warnings) == 1, warnings  # loudly, but once per workflow
    # The entry is back on the queue: a worker that has the workflow runs it as attempt 1.
    await Worker([quick, portable], redis, version="v2").run_until_idle()
    assert await dispatcher.result(started.run_id, timeout=5) == 2
    assert (await dispatcher.store.get_run(started.run_id)).attempt == 1


@pytest.mark.parametrize(
    "settings",
    [{"concurrency": 0}, {"heartbeat": 0}, {"heartbeat": 2.0, "lease_timeout": 2.0}, {"max_attempts": 0},
     {"version": "@mine"}],
)  # fmt: skip
def test_bad_worker_settings_are_config_errors(redis: aioredis.Redis, settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Worker([quick], redis, **settings)


async def test_a_worker_without_workflows_is_refused_and_claims_nothing(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # CLAIM reads an empty list of served workflows as "any": such a worker would claim every
    # run, find no code for it and hand it back, bumping its attempt each time.
    started = await dispatcher.start(quick, {"n": 1}, version="v")
    with pytest.raises(ConfigError, match="no workflows"):
        await Worker([], redis, version="v").run_until_idle()
    record = await dispatcher.store.get_run(started.run_id)
    assert (record.status, record.attempt) == ("queued", 0)


async def test_result_raises_timeout_error_when_the_run_does_not_end_in_time(
    dispatcher: Dispatcher,
) -> None:
    started = await dispatcher.start(quick, {"n": 1})  # no worker: it stays queued
    with pytest.raises(TimeoutError, match=f"run {started.run_id} did not end within 0.2s"):
        await dispatcher.result(started.run_id, timeout=0.2)


async def test_promote_refuses_unknown_versions_and_bad_names(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    await Worker([quick], redis, version="v1").run_until_idle()
    await Worker([quick], redis, version="v2").run_until_idle()
    known = r"no worker has registered version 'v3' \(known versions: v1, v2\)"
    with pytest.raises(ConfigError, match=known):
        await dispatcher.promote("v3")
    for bad in ("", "has space", "a/b", "@any", "x" * 129):
        with pytest.raises(ConfigError, match="version"):
            await dispatcher.promote(bad, force=True)
        with pytest.raises(ConfigError, match="version"):
            Worker([quick], redis, version=bad)
    assert await dispatcher.active_version() == "v1"  # nothing changed
    assert await dispatcher.promote("v3", force=True) == "v1"  # about to be deployed
    assert await dispatcher.rollback() == "v1"


async def test_two_promotions_at_once_never_record_a_wrong_previous(
    dispatcher: Dispatcher, redis: aioredis.Redis, redis_url: str
) -> None:
    for version in ("base", "a", "b"):
        await Worker([quick], redis, version=version).run_until_idle()
    other = Dispatcher(redis_from_url(redis_url))
    try:
        for _ in range(30):
            await dispatcher.promote("base")
            await asyncio.gather(dispatcher.promote("a"), other.promote("b"))
            active = await dispatcher.active_version()
            previous = (await redis.hget(keys.DEPLOY, "previous") or b"").decode()
            # Whichever came second replaced the first: its previous is the first, never "base".
            assert (active, previous) in {("a", "b"), ("b", "a")}
    finally:
        await other.redis.aclose()


async def test_a_hand_off_requeue_is_trimmed_like_a_start(redis: aioredis.Redis) -> None:
    stream = keys.work_stream("trim")
    pipe = redis.pipeline(transaction=False)
    for n in range(WORK_STREAM_MAXLEN + 2_000):
        pipe.xadd(stream, {"run": f"r{n}"})
    await pipe.execute()
    await RunQueue(redis).add(stream, "handed-off")  # what a draining worker's re-queue does
    assert await redis.xlen(stream) < WORK_STREAM_MAXLEN + 1_000


#: Released by nobody: a run of ``parked`` holds its worker until it is cancelled.
PARKED = asyncio.Event()


@outlast.component
async def park_step() -> None:
    await PARKED.wait()


@outlast.workflow
async def parked() -> None:
    await park_step()


async def test_a_claim_in_flight_when_the_worker_stops_is_drained_too(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    # A heartbeat's takeover scan can be mid-CLAIM when the worker is told to stop. The drain must
    # wait for that claim: a run it starts may not be left executing (and leased) by a worker that
    # already returned, to be found only after its lease times out, as a lost worker.
    worker = Worker([parked], redis, heartbeat=0.2, lease_timeout=1.0, drain_timeout=0.1, version="v")
    running = asyncio.create_task(worker.run())
    await worker.ready.wait()
    run_id = (await dispatcher.start(parked, {}, version="elsewhere")).run_id  # (not on its lanes)
    claiming = asyncio.create_task(worker._try_claim(worker.lanes[0], run_id))
    await asyncio.sleep(0)  # the CLAIM is sent, its reply not read yet
    worker.stop()
    await running
    try:
        assert await claiming == "started"
        assert worker.jobs == {}  # drained: nothing of it runs on
        taken = await worker.leases.claim(run_id, "next", 1000, max_attempts=5, served=("parked",))
        assert (taken.status, taken.attempt, taken.losses) == ("ok", 2, 0)  # handed on, not lost
    finally:
        for job in list(worker.jobs.values()):
            if job.task is not None:
                job.task.cancel()
