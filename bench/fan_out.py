"""A fan-out parent whose children end one after another: parent attempts and CPU.

One parent starts N child runs that end spread over a few seconds (each sleeps durably for its
own time). With the default ``hold`` (1 s) a parent blocked on children alone lingers while they
keep ending and takes each result as it comes; the baseline, ``hold=0``, parks the parent at once,
so every child that ends re-queues it and the new attempt replays all its checkpoints (N children,
up to N replays of N steps). Both run in this script on one embedded Valkey, one after the other,
with an in-process worker; printed: parent attempts, wall time and this process's CPU time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import outlast
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.worker import Worker

SIZES = (100, 300)
SPREAD = 3.0  # seconds over which the children end


@outlast.workflow
async def bench_nap(seconds: float) -> float:
    await outlast.sleep(seconds)
    return seconds


@outlast.workflow
async def bench_fan_out(naps: list[float]) -> int:
    return len(await outlast.gather(*(outlast.run_child(bench_nap, {"seconds": s}) for s in naps)))


async def _one(url: str, n: int, hold: float) -> tuple[int, float, float]:
    redis = redis_from_url(url)
    worker = Worker([bench_nap, bench_fan_out], redis, concurrency=n + 10, hold=hold, version=f"h{hold}")
    task = asyncio.create_task(worker.run())
    try:
        await worker.ready.wait()
        dispatcher = Dispatcher(redis)
        naps = [0.5 + SPREAD * i / n for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        run = await dispatcher.start(bench_fan_out, {"naps": naps}, version=f"h{hold}")
        if await dispatcher.result(run.run_id, timeout=600) != n:
            raise RuntimeError("the fan-out lost a child")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        events = [e.type async for e in dispatcher.store.read_events(run.run_id)]
        attempts = events.count(ev.RUN_STARTED)
        return attempts, wall, cpu
    finally:
        worker.stop()
        await task
        await redis.aclose()


async def main() -> None:
    print(f"\n== fan-out: one parent, N child runs ending over {SPREAD:g} s (in-process worker) ==")
    print(f"{'children':>8}  {'parent':<28} {'attempts':>8} {'wall s':>7} {'CPU s':>6}")
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        for n in SIZES:
            rows = {}
            for label, hold in (("lingers (hold=1 s, default)", 1.0), ("parks at once (hold=0)", 0.0)):
                rows[label] = attempts, wall, cpu = await _one(server.url, n, hold)
                print(f"{n:>8}  {label:<28} {attempts:>8} {wall:>7.2f} {cpu:>6.2f}")
            (_, _, lingering), (_, _, parking) = rows.values()
            print(f"{'':>8}  CPU: parking costs {parking / lingering:.1f}x lingering")
