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

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import RedisSettings

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer

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
    cli = "from outlast.cli.main import main; main()"
    return [sys.executable, "-c", cli, "worker", str(HERE / "bench_app.py"), "--redis", url, *extra]


async def burst_seconds(proc: asyncio.subprocess.Process, ready: bytes | None) -> float:
    """Seconds from the worker being ready to it exiting in burst mode (queue drained)."""
    if ready is not None and proc.stdout is not None:
        while not (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(ready):
            pass
    t0 = time.perf_counter()
    await proc.wait()
    return time.perf_counter() - t0


async def bench_outlast(url: str, client: aioredis.Redis) -> dict[str, float]:
    env = {**os.environ, "BENCH_REDIS_URL": url}
    # As the API runs it: the active version cached (dropped when a promotion is announced).
    dispatcher = Dispatcher(client, cache_active_version=True)
    # Throughput: RUNS queued first, then one worker process drains them in burst mode.
    for batch in range(0, RUNS, 100):
        await asyncio.gather(*(dispatcher.start(one_step, {"i": i}) for i in range(batch, batch + 100)))
    burst = await asyncio.create_subprocess_exec(
        *outlast_worker(url, "--concurrency", "200", "--burst"), env=env, cwd=HERE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    elapsed = await burst_seconds(burst, b"worker ")
    # Latency: one run at a time through an idle, long-running worker.
    proc = await spawn(outlast_worker(url, "--concurrency", "200"), env, b"worker ")
    try:
        latencies = []
        for i in range(LATENCY_SAMPLES):
            t0 = time.perf_counter()
            started = await dispatcher.start(one_step, {"i": i})
            assert await dispatcher.result(started.run_id, timeout=30) == i
            latencies.append(time.perf_counter() - t0)
    finally:
        await stop(proc)
        await dispatcher.aclose()
    return {"runs_per_s": RUNS / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


async def bench_arq(url: str, poll_delay: float) -> dict[str, float]:
    env = {**os.environ, "BENCH_REDIS_URL": url, "ARQ_POLL_DELAY": str(poll_delay)}
    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        for batch in range(0, RUNS, 100):
            await asyncio.gather(*(pool.enqueue_job("one_step", i) for i in range(batch, batch + 100)))
        burst = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arq", "--burst", "arq_app.WorkerSettings", env=env, cwd=HERE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        # arq has no ready signal; its start-up (~0.1 s) counts against it, a small bias in its favour
        # compared with what start-up costs per job at 3,000 jobs.
        elapsed = await burst_seconds(burst, None)
        proc = await spawn([sys.executable, "-m", "arq", "arq_app.WorkerSettings"], env, None)
        try:
            warm = await pool.enqueue_job("one_step", 0)
            assert warm is not None
            await warm.result(timeout=30, poll_delay=0.001)
            latencies = []
            for i in range(100 if poll_delay > 0.1 else LATENCY_SAMPLES):
                t0 = time.perf_counter()
                job = await pool.enqueue_job("one_step", i)
                assert job is not None
                await job.result(timeout=30, poll_delay=0.001)
                latencies.append(time.perf_counter() - t0)
        finally:
            await stop(proc)
    finally:
        await pool.aclose()
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
        client = redis_from_url(server.url)
        try:
            ours = await bench_outlast(server.url, client)
            arq_fast = await bench_arq(server.url, 0.001)
            arq_stock = await bench_arq(server.url, 0.5)
            takeover = await bench_takeover(server.url, client)
        finally:
            await client.aclose()
    print(f"\n== compute plane: {RUNS:,} queued one-step runs drained by one worker process (burst) ==")
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
