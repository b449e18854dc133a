"""Worker processes for the compute-plane tests: real ``outlast worker`` subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from outlast.control import Dispatcher

APP = str(Path(__file__).with_name("app.py"))
ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 0.2
LEASE = 1.0


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.id = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def stderr(self) -> str:
        return self.log.read_text()

    async def logged(self, text: str, timeout: float = 30) -> str:
        """The worker's log once it contains ``text`` (polled: the log is a file)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.stderr()):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}:\n{log[-3000:]}")
            await asyncio.sleep(0.05)
        return log


SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


@pytest.fixture
async def spawn_worker(redis_url: str, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    procs: list[WorkerProcess] = []

    async def spawn(
        *args: str, version: str = "dev", concurrency: int = 10, url: str | None = None,
        app: str = APP, env: Mapping[str, str] | None = None,
    ) -> WorkerProcess:  # fmt: skip
        url = url or redis_url
        log = tmp_path / f"worker-{len(procs)}.log"
        cmd = [
            sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", app,
            "--redis", url, "--heartbeat", str(HEARTBEAT), "--lease-timeout", str(LEASE),
            "--version", version, "--concurrency", str(concurrency), *args,
        ]  # fmt: skip
        full_env = {**os.environ, "APP_REDIS_URL": url, "COLUMNS": "200", **(env or {})}
        with log.open("wb") as err:  # from the repo root, so a module path such as examples.blog imports
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, env=full_env, cwd=ROOT
            )
        worker = WorkerProcess(proc, log)
        procs.append(worker)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)  # printed once registered
        assert line.startswith(b"worker "), line + log.read_bytes()
        worker.id = line.split()[1].decode()
        return worker

    yield spawn
    for worker in procs:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGKILL)
            await worker.proc.wait()
        if worker.proc.stdout is not None:
            worker.proc.stdout.feed_eof()


@pytest.fixture
def dispatcher(redis: aioredis.Redis) -> Dispatcher:
    return Dispatcher(redis)
