"""Structured logs of a real worker process: JSON lines on a non-TTY stderr, each naming the worker,
and the run and attempt for lines logged while a run executes (the app's own logging included)."""

from __future__ import annotations

import json
import signal

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher

from .app import chatty
from .conftest import SpawnWorker

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]


async def test_a_worker_logs_json_lines_with_run_attempt_and_worker(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_LOG_FORMAT", raising=False)  # auto: stderr is a file here, not a TTY
    dispatcher = Dispatcher(redis)
    worker = await spawn_worker("--drain-timeout", "0")
    run_id = (await dispatcher.start(chatty, {"tag": "logs"})).run_id
    async for event in dispatcher.store.read_events(run_id, block_ms=200):
        if event.type == ev.STEP_STARTED and event.data["name"] == "gate":
            break  # the chatty step has logged
    worker.signal(signal.SIGTERM)  # drains: the worker logs that it hands its run on
    assert await worker.wait() == 0
    lines = [line for line in worker.stderr().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert all(r["worker_id"] == worker.id for r in records), records
    (step,) = [r for r in records if r["logger"] == "app.flows"]
    assert step["msg"] == "step of logs ran"
    assert (step["run_id"], step["attempt"], step["level"]) == (run_id, 1, "info")
    draining = [r for r in records if "draining" in r["msg"]]
    assert draining, records
    assert all(r["logger"] == "outlast.worker" for r in draining)
