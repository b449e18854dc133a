"""``outlast input RUN_ID KEY --json '...'``: supplies a waiting run's input; mistakes get one line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.worker import Worker

CLI = [sys.executable, "-c", "from outlast.cli.main import main; main()"]


class Approval(BaseModel):
    ok: bool


@outlast.workflow
async def review(doc: str) -> dict[str, Any]:
    got = await outlast.wait_for_input("approve", Approval, prompt="Approve?")
    return {"doc": doc, "ok": got.ok}


async def outlast_cli(*args: str) -> tuple[int, str, str]:
    """Run the real command line in a subprocess (without blocking the in-process worker)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def waiting_run(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A run of ``review`` that has suspended waiting for ``approve`` (its worker keeps running)."""
    worker = Worker([review], redis, heartbeat=0.2, lease_timeout=1.0)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 20)
    started = await Dispatcher(redis).start(review, {"doc": "plan.md"})
    async with asyncio.timeout(20):
        async for event in Dispatcher(redis).store.read_events(started.run_id, block_ms=1_000):
            assert not event.terminal, event
            if event.type == ev.RUN_WAITING:
                break
    yield started.run_id
    worker.stop()
    await asyncio.wait_for(task, 20)


async def assert_still_waiting(redis: aioredis.Redis, run_id: str) -> None:
    dispatcher = Dispatcher(redis)
    assert (await dispatcher.store.get_run(run_id)).status == "waiting"
    assert [w["key"] for w in await dispatcher.pending_waits(run_id)] == ["approve"]


async def test_input_resumes_the_run(waiting_run: str, redis: aioredis.Redis, redis_url: str) -> None:
    code, out, err = await outlast_cli(
        "input", waiting_run, "approve", "--json", '{"ok": true}', "--redis", redis_url
    )
    assert (code, err) == (0, "")
    assert out.strip() == f"input 'approve' delivered to run {waiting_run} (resumed)"
    assert await Dispatcher(redis).result(waiting_run, timeout=20) == {"doc": "plan.md", "ok": True}


async def test_input_from_a_file(
    waiting_run: str, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    value = tmp_path / "value.json"
    value.write_text('{"ok": false}\n')
    code, out, _ = await outlast_cli(
        "input", waiting_run, "approve", "--file", str(value), "--redis", redis_url
    )
    assert code == 0, out
    assert "(resumed)" in out
    assert await Dispatcher(redis).result(waiting_run, timeout=20) == {"doc": "plan.md", "ok": False}


async def test_mistakes_get_one_line_and_leave_the_run_waiting(
    waiting_run: str, redis: aioredis.Redis, redis_url: str
) -> None:
    url = ("--redis", redis_url)
    cases = [
        # Bad JSON is a usage error (2), with an example of how to quote it for the shell.
        (
            ("approve", "--json", "{ok: true}"),
            2,
            "error: --json is not valid JSON (Expecting property name enclosed in double quotes: line 1 "
            """column 2 (char 1)); quote it for the shell, e.g. --json '{"ok": true}'""",
        ),
        (("approve",), 2, "give the value as --json JSON or --file PATH"),
        # The run refuses (1): it waits for another key, or the value fails the schema.
        (("reject", "--json", "true"), 1, "is not waiting for input 'reject'; it waits for approve"),
        (("approve", "--json", '{"ok": "yes"}'), 1, "input 'approve' at ok: 'yes' is not of type 'boolean'"),
    ]
    for args, expected_code, message in cases:
        code, out, err = await outlast_cli("input", waiting_run, *args, *url)
        assert code == expected_code, (args, out, err)
        assert message in " ".join(err.split()), (args, err)
        assert "Traceback" not in out + err
        assert out == ""
        await assert_still_waiting(redis, waiting_run)


async def test_input_to_an_unknown_run(redis_url: str) -> None:
    code, out, err = await outlast_cli(
        "input", "no-such-run", "approve", "--json", "true", "--redis", redis_url
    )
    assert code == 1
    assert "no run 'no-such-run'" in err
    assert "Traceback" not in out + err
