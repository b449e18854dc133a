"""The multiplexed connection vs redis-py's pool, A/B in one script: two worker processes, one
with ``OUTLAST_MULTIPLEX=0``, serving two deployment versions of the same one-step workflow on
one embedded Valkey. Runs alternate between them one at a time, so the host's noise (a shared
2-core VM here, whose speed drifts by tens of percent from minute to minute) falls on both
equally. Printed: enqueue→result latency and each worker's CPU time per run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_app import one_step  # noqa: E402
from outlast.control import Dispatcher  # noqa: E402
from outlast.store.client import redis_from_url  # noqa: E402
from outlast.store.embedded import EmbeddedServer  # noqa: E402
from worker_throughput import outlast_worker, pct, spawn, stop  # noqa: E402

RUNS = 4000
WARMUP = 400
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def main() -> None:
    variants = {"pool": "0", "mux": "1"}  # version name -> OUTLAST_MULTIPLEX of its worker
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = redis_from_url(server.url)
        dispatcher = Dispatcher(client)
        workers = {}
        try:
            for version, flag in variants.items():
                env = {**os.environ, "BENCH_REDIS_URL": server.url, "OUTLAST_MULTIPLEX": flag}
                cmd = outlast_worker(server.url, "--concurrency", "200", "--version", version)
                workers[version] = await spawn(cmd, env, b"worker ")
            latency: dict[str, list[float]] = {v: [] for v in variants}
            cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
            names = list(variants)
            for i in range(RUNS + WARMUP):
                version = names[i % 2]
                pid = workers[version].pid
                before = cpu_seconds(pid)
                t0 = time.perf_counter()
                started = await dispatcher.start(one_step, {"i": i}, version=version)
                if await dispatcher.result(started.run_id, timeout=30) != i:
                    raise RuntimeError(f"run {started.run_id} returned a wrong result")
                if i >= WARMUP:
                    latency[version].append(time.perf_counter() - t0)
                    cpu[version] += cpu_seconds(pid) - before
        finally:
            for proc in workers.values():
                await stop(proc)
            await dispatcher.aclose()
            await client.aclose()
    print(f"\n== worker store connection, A/B interleaved ({RUNS:,} one-step runs, one at a time) ==")
    print(f"{'worker store connection':<40}{'p50 ms':>9}{'p90 ms':>9}{'worker CPU/run ms':>19}")
    rows = [("redis-py pool (OUTLAST_MULTIPLEX=0)", "pool"), ("multiplexed (default)", "mux")]
    for label, version in rows:
        samples = latency[version]
        per_run = cpu[version] / len(samples) * 1e3
        print(f"{label:<40}{pct(samples, 0.5) * 1e3:>9.2f}{pct(samples, 0.9) * 1e3:>9.2f}{per_run:>19.3f}")
    gain = 1 - pct(latency["mux"], 0.5) / pct(latency["pool"], 0.5)
    print(f"multiplexed: p50 {gain:.0%} lower; CPU per run {1 - cpu['mux'] / cpu['pool']:.0%} lower")
