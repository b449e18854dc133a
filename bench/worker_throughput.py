"""Compute plane: runs/s and enqueue→result latency vs arq, and takeover latency after SIGKILL.

Everything runs against one embedded Valkey (AOF on). Each system gets one worker *process*
executing an equivalent one-step job; arq runs twice, with its stock 0.5 s poll delay and with
1 ms polling. Outlast workers are woken by a blocking XREADGROUP, never by polling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import RedisSettings

import outlast
from outlast import events as ev
from outlast.store.embedded import EmbeddedServer
from outlast.worker import Dispatcher

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_app import held_run, one_step  # noqa: E402

RUNS = 3000
LATENCY_SAMPLES = 300


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def spawn(cmd: list[str], env: dict[str, str], ready: bytes | None) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=HERE
    )
    if ready is not None and proc.stdout is not None:
        while not (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(ready):
            pass
    return proc


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        await proc.wait()


def outlast_worker(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", str(HERE / "bench_app.py"),
            "--redis", url, *extra]  # fmt: skip


async def bench_outlast(url: str, client: aioredis.Redis) -> dict[str, float]:
    env = {**os.environ, "BENCH_REDIS_URL": url}
    proc = await spawn(outlast_worker(url, "--concurrency", "200"), env, b"worker ")
    dispatcher = Dispatcher(client)
    try:
        latencies = []
        for i in range(LATENCY_SAMPLES):
            t0 = time.perf_counter()
            started = await dispatcher.start(one_step, {"i": i})
            async for event in dispatcher.store.read_events(started.run_id, block_ms=1000):
                if event.terminal:
                    break
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids: list[str] = []
        for batch in range(0, RUNS, 100):
            starts = await asyncio.gather(
                *(dispatcher.start(one_step, {"i": i}) for i in range(batch, batch + 100))
            )
            ids += [s.run_id for s in starts]
        for run_id in ids:
            await dispatcher.wait(run_id, timeout=120)
        elapsed = time.perf_counter() - t0
    finally:
        await stop(proc)
    return {"runs_per_s": RUNS / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


async def bench_arq(url: str, poll_delay: float) -> dict[str, float]:
    env = {**os.environ, "BENCH_REDIS_URL": url, "ARQ_POLL_DELAY": str(poll_delay)}
    proc = await spawn([sys.executable, "-m", "arq", "arq_app.WorkerSettings"], env, None)
    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        warm = await pool.enqueue_job("one_step", 0)
        assert warm is not None
        await warm.result(timeout=30, poll_delay=0.001)
        latencies = []
        for i in range(min(LATENCY_SAMPLES, 100 if poll_delay > 0.1 else LATENCY_SAMPLES)):
            t0 = time.perf_counter()
            job = await pool.enqueue_job("one_step", i)
            assert job is not None
            await job.result(timeout=30, poll_delay=0.001)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jobs: list[Any] = []
        for batch in range(0, RUNS, 100):
            jobs += await asyncio.gather(
                *(pool.enqueue_job("one_step", i) for i in range(batch, batch + 100))
            )
        for job in jobs:
            await job.result(timeout=120, poll_delay=0.005)
        elapsed = time.perf_counter() - t0
    finally:
        await pool.aclose()
        await stop(proc)
    return {"runs_per_s": RUNS / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


async def bench_takeover(url: str, client: aioredis.Redis, runs: int = 20) -> list[float]:
    """SIGKILL the worker holding ``runs`` runs; time until each is re-started by the other."""
    env = {**os.environ, "BENCH_REDIS_URL": url}
    victim = await spawn(outlast_worker(url, "--concurrency", "50"), env, b"worker ")
    dispatcher = Dispatcher(client)
    ids = [(await dispatcher.start(held_run, {"tag": f"t{n}"})).run_id for n in range(runs)]
    for run_id in ids:
        async for event in dispatcher.store.read_events(run_id, block_ms=1000):
            if event.type == ev.STEP_STARTED:
                break
    survivor = await spawn(outlast_worker(url, "--concurrency", "50"), env, b"worker ")
    killed = time.time()
    await stop(victim, signal.SIGKILL)
    latencies = []
    try:
        for run_id in ids:
            async for event in dispatcher.store.read_events(run_id, block_ms=1000):
                if event.type == ev.RUN_STARTED and event.attempt == 2:
                    latencies.append(event.ts - killed)
                    break
        await client.rpush("bench:gate:dummy", "x")
        for n in range(runs):
            await client.rpush(f"bench:gate:t{n}", "go")
        for run_id in ids:
            await dispatcher.wait(run_id, timeout=30)
    finally:
        await stop(survivor)
    return latencies


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            ours = await bench_outlast(server.url, client)
            arq_fast = await bench_arq(server.url, 0.001)
            arq_stock = await bench_arq(server.url, 0.5)
            takeover = await bench_takeover(server.url, client)
        finally:
            await client.aclose()
    print(f"\n== compute plane: {RUNS:,} one-step runs, one worker process each ==")
    print(f"{'system':<34}{'runs/s':>10}{'enqueue→result p50 ms':>24}{'p99 ms':>10}")
    rows = [
        ("outlast (blocking XREADGROUP)", ours),
        ("arq, poll_delay=1 ms", arq_fast),
        ("arq, stock (0.5 s poll)", arq_stock),
    ]
    for label, r in rows:
        print(f"{label:<34}{r['runs_per_s']:>10,.0f}{r['p50'] * 1e3:>24.2f}{r['p99'] * 1e3:>10.2f}")
    print(f"ratio outlast/arq(1 ms): {ours['runs_per_s'] / arq_fast['runs_per_s']:.2f}x runs/s, "
          f"{arq_fast['p50'] / ours['p50']:.2f}x lower p50 latency")  # fmt: skip
    print(f"\n== takeover after SIGKILL ({len(takeover)} runs, lease 4 s, heartbeat 1 s; bound 5 s) ==")
    print(f"p50 {statistics.median(takeover):.2f} s, max {max(takeover):.2f} s")
