"""Durable step overhead vs a bare Redis round trip, measured side by side in one process.

A no-op component inside a workflow costs: argument hashing, the step.started event, the
checkpoint + step.completed commit (one Lua call, shared with step.started by the writer's
group commit) and the context bookkeeping. The baseline is a PING and a one-line EVALSHA over
the same connection the store uses (the client's multiplexed one, as ``outlast.connect`` makes
it) to the same embedded Valkey (AOF on, appendfsync everysec); a PING through redis-py's pool
is printed beside them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import outlast
from outlast.store.base import AppendItem
from outlast.store.client import multiplexer_of, redis_from_url
from outlast.store.embedded import EmbeddedServer

STEPS_PER_RUN = 500
RUNS = 6
RTT_SAMPLES = 3000


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


class CountingStore(outlast.RedisStore):
    """Counts the store's round trips (every write is one APPEND script call)."""

    appends = 0

    async def append(self, run_id: str, attempt: int, items: Sequence[AppendItem]) -> int:
        self.appends += 1
        return await super().append(run_id, attempt, items)


@outlast.component
async def noop(i: int) -> int:
    return i


def make_workflow(samples: list[float]) -> outlast.Workflow[Any, Any]:
    @outlast.workflow(name="bench_steps")
    async def steps(n: int) -> int:
        for i in range(n):
            t0 = time.perf_counter()
            await noop(i)
            samples.append(time.perf_counter() - t0)
        return n

    return steps


@outlast.workflow(name="bench_fanout")
async def fanout(n: int) -> int:
    results = await outlast.gather(*(noop(i) for i in range(n)), limit=64)
    return len(results)


async def measure_steps(store: outlast.RedisStore | outlast.MemoryStore) -> list[float]:
    samples: list[float] = []
    wf = make_workflow(samples)
    runner = outlast.Runner(store)
    await runner.run(wf, {"n": 50})  # warm-up: scripts loaded, connections open
    samples.clear()
    for _ in range(RUNS):
        await runner.run(wf, {"n": STEPS_PER_RUN})
    return samples


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = redis_from_url(server.url)  # as outlast.connect makes it
        mux = multiplexer_of(client)
        if mux is None:
            raise RuntimeError("redis_from_url gives a multiplexed connection")
        try:
            store = CountingStore(client)
            trivial = client.register_script("return 1")
            await trivial()
            ping = await timed(lambda: mux.execute("PING"), RTT_SAMPLES)
            evalsha = await timed(lambda: mux.execute("EVALSHA", trivial.sha, 0), RTT_SAMPLES)
            pool_ping = await timed(client.ping, RTT_SAMPLES)
            durable = await measure_steps(store)
            steps_measured = RUNS * STEPS_PER_RUN
            # Per run: the first step shares its append with run.started, then one per step, then
            # run.completed; per step that is (steps + 1) / steps appends, run.started included.
            round_trips = store.appends / (steps_measured + 50) if store.appends else 0.0
            memory = await measure_steps(outlast.MemoryStore())
            runner = outlast.Runner(store)
            await runner.run(fanout, {"n": 200})
            t0 = time.perf_counter()
            total = 0
            for _ in range(5):
                total += await runner.run(fanout, {"n": 1000})
            fanout_rate = total / (time.perf_counter() - t0)
        finally:
            await client.aclose()

    rtt = statistics.median(ping) * 1e6
    print("\n== durable step overhead (no-op component, sequential) ==")
    print(f"{'measurement':<44}{'p50 µs':>10}{'p99 µs':>10}{'x RTT p50':>12}")
    rows = [
        ("bare Redis round trip (PING)", ping),
        ("  the same through redis-py's pool", pool_ping),
        ("bare Lua call (EVALSHA 'return 1')", evalsha),
        ("durable step, RedisStore", durable),
        ("same step, MemoryStore (runtime CPU only)", memory),
    ]
    for label, samples in rows:
        p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
        print(f"{label:<44}{p50:>10.1f}{p99:>10.1f}{p50 / rtt:>12.2f}")
    print(f"samples: {len(durable)} steps in {RUNS} runs; {RTT_SAMPLES} round trips per baseline")
    print(f"store round trips per durable step: {round_trips:.3f} (counted appends / steps, incl. warm-up)")
    print("\n== fan-out: gather(limit=64) of 1,000 no-op steps ==")
    print(f"{fanout_rate:,.0f} durable steps/s (group commit)")
