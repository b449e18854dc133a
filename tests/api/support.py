"""Real processes and real sockets for the API tests: worker and API subprocesses, a chaos proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from outlast.events import Event
from outlast.store.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = str(Path(__file__).with_name("app.py"))
CLI = "from outlast.cli.main import main; main()"
# What `outlast api` runs, with keyword options (``python -m uvicorn --factory`` cannot pass them).
LAUNCH = (
    "import json, sys\n"
    "from outlast.cli.api import serve\n"
    "c = json.loads(sys.argv[1])\n"
    "serve(c['url'], port=c['port'], **c['options'])\n"
)
#: Fast settings for tests: short keep-alives, retry hints and blocking reads.
FAST = {"keepalive": 0.5, "retry_ms": 100, "block_ms": 1000, "send_timeout": 1.0}


class Proc:
    """A child process whose output is collected by a thread; ``ready`` is set on a marker line."""

    def __init__(self, cmd: list[str], env: dict[str, str], marker: bytes) -> None:
        self.cmd = cmd
        self.popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._marker = marker
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.decode(errors="replace"))
            if self._marker in line:
                self.ready.set()
        self.ready.set()  # exited: wait_ready reports it

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.ready.wait(timeout) or self.popen.poll() is not None:
            raise RuntimeError(f"{self.cmd[3:5]} did not start:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._thread.join(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()
        return self.popen.returncode


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    return {**env, "OUTLAST_REDIS_URL": redis_url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **extra}


def spawn_worker(redis_url: str, *args: str) -> Proc:
    cmd = [
        sys.executable, "-c", CLI, "worker", APP, "--redis", redis_url,
        "--heartbeat", "0.2", "--lease-timeout", "1", *args,
    ]  # fmt: skip
    return Proc(cmd, child_env(redis_url), b"worker ")


class ApiServer:
    """An API in its own uvicorn process on a loopback port; ``restart`` reuses the port."""

    def __init__(self, redis_url: str, port: int | None = None, *, factory_env: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, **options: Any) -> None:  # fmt: skip
        self.redis_url = redis_url
        self.port = port or free_port()
        self.options = {**FAST, **options}
        self.factory_env = factory_env
        self.env = env or {}
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc = self._spawn()

    def _spawn(self) -> Proc:
        if self.factory_env is not None:  # the way an operator runs it: env vars and --factory
            cmd = [sys.executable, "-m", "uvicorn", "outlast.api:create_app", "--factory",
                   "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
            return Proc(cmd, child_env(self.redis_url, **self.factory_env), b"Uvicorn running on")
        config = json.dumps({"url": self.redis_url, "port": self.port, "options": self.options})
        env = child_env(self.redis_url, **self.env)
        return Proc([sys.executable, "-c", LAUNCH, config], env, b"Uvicorn running on")

    def kill(self) -> None:
        self.proc.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.proc = self._spawn()

    def stop(self) -> None:
        self.proc.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20, what: str = "condition") -> None:
    """Poll an external process's state (there is no event to await across processes)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def read_sse(
    http: httpx.AsyncClient, path: str, *, stop_after: int | None = None, **kwargs: Any
) -> list[Event]:
    """Events of one SSE connection; with ``stop_after``, hang up after that many (a drop)."""
    events: list[Event] = []
    async with aconnect_sse(http, "GET", path, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            events.append(Event.model_validate_json(sse.data))
            if events[-1].terminal or (stop_after is not None and len(events) >= stop_after):
                break
    return events


def assert_exactly_once(events: list[Event], last: int | None = None) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"not 1..N exactly once: {seqs[:20]}…"
    assert events[-1].terminal
    if last is not None:
        assert seqs[-1] == last


class ChaosProxy:
    """A TCP proxy that cuts the first ``drops`` connections after a random number of response
    bytes (mid-frame, mid-header: wherever), then passes everything through."""

    def __init__(self, upstream_port: int, drops: int, seed: int, max_bytes: int = 8_000) -> None:
        self.upstream_port = upstream_port
        self.drops_left = drops
        self.cuts = 0
        self.max_bytes = max_bytes
        self.rng = random.Random(seed)
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.close()  # ends the pumps, so every handler returns on its own
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := await src.read(4096):
                if limit is not None and sent + len(data) >= limit:
                    dst.write(data[: limit - sent])
                    await dst.drain()
                    self.cuts += 1
                    return
                sent += len(data)
                dst.write(data)
                await dst.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        budget: int | None = None
        if self.drops_left > 0:
            self.drops_left -= 1
            budget = self.rng.randint(100, self.max_bytes)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.add(up_writer)
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer, None)),
                 asyncio.ensure_future(self._pump(up_reader, writer, budget))]  # fmt: skip
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                await w.wait_closed()
        self._handlers.discard(task)
