"""Dispatching in-process: idempotent starts, the registry, versions, burst workers."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

import outlast
from outlast.control import Dispatcher
from outlast.errors import ConfigError, OutlastError, WorkflowNotFound
from outlast.store import keys
from outlast.worker import Worker

from .app import quick


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
    assert await redis.keys("outlast:run:*") == []
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
    assert await dispatcher.promote("v2") == "v1"
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


async def test_a_run_of_an_unknown_workflow_fails_clearly(
    dispatcher: Dispatcher, redis: aioredis.Redis
) -> None:
    started = await dispatcher.start(portable, {"n": 1}, version="v1")
    # A v1 worker deployed without that workflow: the run fails with a reason, it does not hang.
    await Worker([quick], redis, version="v1").run_until_idle()
    record = await dispatcher.wait(started.run_id, timeout=5)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error["reason"] == "workflow_not_found"


@pytest.mark.parametrize(
    "settings",
    [{"concurrency": 0}, {"heartbeat": 0}, {"heartbeat": 2.0, "lease_timeout": 2.0}, {"max_attempts": 0},
     {"version": "@mine"}],
)  # fmt: skip
def test_bad_worker_settings_are_config_errors(redis: aioredis.Redis, settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Worker([quick], redis, **settings)
