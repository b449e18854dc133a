"""Fixtures for the examples' acceptance tests: real ``outlast worker examples.<name>`` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from outlast import events as ev
from outlast.store.redis import RedisStore

ROOT = Path(__file__).resolve().parents[2]  # the repo root: `examples` imports from here
HEARTBEAT = 0.2
LEASE = 1.0


class ExampleWorker:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path, worker_id: str) -> None:
        self.proc, self.log, self.id = proc, log, worker_id

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


SpawnExample = Callable[[str, Mapping[str, str]], Awaitable[ExampleWorker]]


@pytest.fixture
async def spawn_example(redis_url: str, tmp_path: Path) -> AsyncIterator[SpawnExample]:
    """``await spawn_example("examples.onboarding", env)``: a worker process serving the example."""
    procs: list[ExampleWorker] = []

    async def spawn(target: str, env: Mapping[str, str]) -> ExampleWorker:
        log = tmp_path / f"worker-{len(procs)}.log"
        cmd = [
            sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", target,
            "--redis", redis_url, "--heartbeat", str(HEARTBEAT), "--lease-timeout", str(LEASE),
            "--concurrency", "20",
        ]  # fmt: skip
        full_env = {**os.environ, "OUTLAST_REDIS_URL": redis_url, "COLUMNS": "200", **env}
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, env=full_env, cwd=ROOT
            )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # printed once registered
        assert line.startswith(b"worker "), line + log.read_bytes()
        worker = ExampleWorker(proc, log, line.split()[1].decode())
        procs.append(worker)
        return worker

    yield spawn
    for worker in procs:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGKILL)
            await worker.proc.wait()
        if worker.proc.stdout is not None:
            worker.proc.stdout.feed_eof()


async def events_of(store: RedisStore, run_id: str) -> list[ev.Event]:
    return [e async for e in store.read_events(run_id, follow=False)]


def owners(events: list[ev.Event]) -> dict[int, str]:
    """attempt → the worker that ran it."""
    return {e.attempt: e.data["worker"] for e in events if e.type == ev.RUN_STARTED}
