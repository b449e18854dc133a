"""``outlast dev``: cold start and code-change reload, against starting the same stack by hand.

* Cold start: from spawning ``outlast dev bench_app.py --workers 2`` to the API answering
  ``/healthz`` and both workers registered (goal ≤ 3 s on the 2-core VM). Baseline, side by side:
  the README's manual path — ``outlast server``, then ``outlast api`` and two ``outlast worker``
  processes started at once — to the same two conditions.
* Reload: from writing a changed app file to the new version being active with its two workers
  registered, as seen from outside through Redis (goal ≤ 2 s). Each edit waits until dev's standby
  workers are warm (``standby_ready`` in ``.outlast/dev.json``), as edits seconds apart find them.
  Baseline: stopping ``outlast dev`` and starting it again (what a dev server without reload makes
  you do).

Each figure is the median of ``ROUNDS`` (min–max shown); every process is stopped by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import DEVNULL, PIPE, Process
from pathlib import Path

import httpx

from outlast.control import Dispatcher
from outlast.store.client import redis_from_url
from outlast.store.embedded import free_port

ROUNDS = 5
CLI = [sys.executable, "-m", "outlast.cli"]
APP = Path(__file__).with_name("bench_app.py")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}


async def _poll(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the stack did not come up")
        await asyncio.sleep(0.01)  # polling from outside, as a user's script would


async def _ready(api: str, redis_url: str, version: str | None, workers: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            if (await http.get(f"{api}/healthz")).status_code != 200:
                return False
        redis = redis_from_url(redis_url)
        try:
            live = await Dispatcher(redis).workers()
            active = await Dispatcher(redis).active_version()
        finally:
            await redis.aclose()
    except (httpx.HTTPError, OSError, Exception):  # not up yet, whatever the reason
        return False
    if version is not None and active != version:
        return False
    return sum(1 for w in live if version is None or w["version"] == version) >= workers


async def _stop(procs: list[Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _dev_state(folder: Path) -> dict[str, str] | None:
    try:
        state: dict[str, str] = json.loads((folder / ".outlast" / "dev.json").read_text())
    except (OSError, ValueError):
        return None
    return state


async def _dev_up(folder: Path) -> tuple[Process, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "dev", "bench_app.py", "--port", str(port), "--workers", "2",
        cwd=folder, env=ENV, stdout=DEVNULL, stderr=DEVNULL,
    )  # fmt: skip

    async def up() -> bool:
        state = _dev_state(folder)
        return state is not None and await _ready(f"http://127.0.0.1:{port}", state["redis_url"], None, 2)

    await _poll(up)
    return proc, time.perf_counter() - t0


async def _manual_up(folder: Path) -> tuple[list[Process], float]:
    port, redis_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    t0 = time.perf_counter()
    server = await asyncio.create_subprocess_exec(
        *CLI, "server", "--port", str(redis_port), cwd=folder, env=ENV, stdout=PIPE
    )
    if server.stdout is not None:
        await server.stdout.readline()  # "export OUTLAST_REDIS_URL=...": Valkey is up
    rest = [
        await asyncio.create_subprocess_exec(
            *CLI, *args, "--redis", url, cwd=folder, env=ENV, stderr=DEVNULL, stdout=DEVNULL
        )
        for args in (["api", "--port", str(port)], ["worker", "bench_app.py"], ["worker", "bench_app.py"])
    ]
    procs = [*rest, server]
    await _poll(lambda: _ready(f"http://127.0.0.1:{port}", url, None, 2))
    return procs, time.perf_counter() - t0


async def _reload(folder: Path, n: int) -> float:
    async def idle() -> bool:  # a developer edits again after seconds, not milliseconds
        now = _dev_state(folder)
        return bool(now and now.get("standby_ready"))

    await _poll(idle)
    state = _dev_state(folder)
    before = state["version"] if state else ""
    app = folder / "bench_app.py"
    t0 = time.perf_counter()
    app.write_text(app.read_text() + f"\n# change {n}\n")

    async def moved() -> bool:
        now = _dev_state(folder)
        if now is None or now["version"] == before:
            return False
        return await _ready(now["api_url"], now["redis_url"], now["version"], 2)

    await _poll(moved)
    return time.perf_counter() - t0


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


async def main() -> None:
    print(f"\n== outlast dev: cold start and reload, {ROUNDS} rounds each (2 workers) ==")
    with tempfile.TemporaryDirectory(prefix="outlast-dev-bench-") as tmp:
        folder, manual = Path(tmp) / "dev", Path(tmp) / "manual"
        for where in (folder, manual):
            where.mkdir()
            shutil.copy(APP, where / "bench_app.py")
        dev_starts, manual_starts, reloads, restarts = [], [], [], []
        for _ in range(ROUNDS):
            procs, took = await _manual_up(manual)
            manual_starts.append(took)
            await _stop(procs)
            proc, took = await _dev_up(folder)
            dev_starts.append(took)
            await _stop([proc])
        proc, _ = await _dev_up(folder)
        try:
            for n in range(ROUNDS):
                reloads.append(await _reload(folder, n))
            for _ in range(ROUNDS):
                t0 = time.perf_counter()  # Ctrl-C, then `outlast dev` again
                await _stop([proc])
                proc, _ = await _dev_up(folder)
                restarts.append(time.perf_counter() - t0)
        finally:
            await _stop([proc])
    print(f"cold start, outlast dev          : {_fmt(dev_starts)}   (goal ≤ 3 s)")
    print(f"cold start, by hand (4 commands) : {_fmt(manual_starts)}")
    ratio = statistics.median(dev_starts) / statistics.median(manual_starts)
    print(f"  ratio dev / by hand            : {ratio:.2f}")
    print(f"reload, code change → serving    : {_fmt(reloads)}   (goal ≤ 2 s)")
    print(f"restart instead of reload        : {_fmt(restarts)}")
    ratio = statistics.median(reloads) / statistics.median(restarts)
    print(f"  ratio reload / restart         : {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
