"""What a worker process records and logs when runs fail, end or are taken over (real processes)."""

from __future__ import annotations

import signal

import pytest

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.errors import RunFailed

from .app import boom, hang, quick
from .conftest import SpawnWorker
from .test_faults import events_of, wait_event

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


async def test_an_error_too_large_to_store_fails_the_run_once_with_its_cause(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    worker = await spawn_worker()
    ok = (await dispatcher.start(quick, {"n": 1})).run_id
    bad = (await dispatcher.start(boom, {"tag": "b", "size": 3_000_000})).run_id
    assert await dispatcher.result(ok, timeout=30) == 1
    with pytest.raises(RunFailed):
        await dispatcher.result(bad, timeout=30)
    record = await dispatcher.store.get_run(bad)
    assert (record.status, record.attempt, record.losses) == ("failed", 1, 0)  # once, not re-executed
    assert record.error is not None
    assert record.error["type"] == "RuntimeError"
    assert record.error["message"].startswith("b exploded: xxx")
    assert record.error["message"].endswith("[cut: 3,000,012 characters in all]")
    assert "in explode" in record.error["traceback"]
    events = await events_of(dispatcher, bad)
    assert [e.type for e in events if e.type in (ev.RUN_STARTED, ev.RUN_FAILED)] == [
        ev.RUN_STARTED,
        ev.RUN_FAILED,
    ]
    # One line per run end, naming the error; the library's per-request INFO lines stay quiet.
    log = await worker.logged(f"run {bad} failed (attempt 1): RuntimeError: b exploded: xxx")
    assert f"run {ok} completed (attempt 1)" in log
    assert "HTTP Request" not in log
    assert max(len(line) for line in log.splitlines()) < 1_000


async def test_the_worker_logs_takeovers_and_cancellations(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher
) -> None:
    first = await spawn_worker()
    run_id = (await dispatcher.start(hang, {"tag": "t"})).run_id
    await wait_event(dispatcher, run_id, ev.STATUS)
    first.signal(signal.SIGKILL)
    await first.wait()
    second = await spawn_worker()
    await wait_event(dispatcher, run_id, ev.STEP_STARTED, attempt=2)  # (its status is not emitted again)
    await second.logged(f"took over run {run_id}")
    assert (await dispatcher.cancel(run_id)).status == "cancelling"
    await second.logged(f"run {run_id} cancelled (attempt 2)")
