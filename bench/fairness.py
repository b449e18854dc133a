"""Fair queues under a burst: tenant A's 5,000 runs are queued at once; tenant B starts 10 a second
after the workers start on them. Two worker processes against one embedded Valkey (AOF on); each
scenario runs ``REPEATS`` times, interleaved with the others, medians printed (and A's spread: a
2-core machine is noisy).

The runs are I/O-bound (one step that awaits 20 ms, as a call to a slow API does) on 2 workers ×
10 slots, so A's burst takes seconds and B arrives with thousands of A's runs still queued.
Printed side by side, with fairness on (each tenant's runs behind its own fairness key, pumped
round-robin) and off (one plain stream, first come first served):

* B's start→running p50 / p99 (``created_at`` to ``started_at`` of its record; the p99 of 10 runs
  is their max). Target with fairness: a few hundred ms at most.
* A's runs/s without B's runs and with them (A's runs over the span from its first claim to its
  last end). Target: B costs A no more than 10 %.

Last, the pump's own cost: CPU-bound one-step runs (no await) of A alone, fair vs plain, 2 workers ×
20 slots, where dispatch overhead is all there is to measure.

A is queued before the workers start, so its runs/s is the workers' pace, not the enqueuer's, and
the bench process sleeps while they work (on 2 cores it would otherwise compete for the CPU).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from outlast.control import Dispatcher
from outlast.core.workflow import Workflow
from outlast.store import keys
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_app import io_step, one_step  # noqa: E402
from worker_throughput import outlast_worker, pct, spawn, stop  # noqa: E402

A_RUNS, B_RUNS, B_AFTER, WORKERS, REPEATS = 5000, 10, 1.0, 2, 3


async def start(
    dispatcher: Dispatcher, workflow: Workflow[Any, Any], tenant: str, n: int, fair: bool
) -> list[str]:
    ids: list[str] = []
    for done in range(0, n, 250):
        started = await asyncio.gather(
            *(dispatcher.start(workflow, {"i": i}, tenant=tenant, fairness_key=None if fair else "")
              for i in range(done, min(n, done + 250)))
        )  # fmt: skip
        ids += [s.run_id for s in started]
    return ids


async def records(client: aioredis.Redis, run_ids: list[str]) -> list[tuple[float, float, float]]:
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run_keys(run_id).meta, "created_at", "started_at", "finished_at")
    return [(float(c), float(s), float(f)) for c, s, f in await pipe.execute()]


async def all_ended(dispatcher: Dispatcher, client: aioredis.Redis, run_ids: list[str]) -> None:
    """Wait for the last run, then for any other not ended yet (few: A's runs go in order)."""
    await dispatcher.wait(run_ids[-1], timeout=300)
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.run_keys(run_id).meta, "finished_at")
    for run_id, finished in zip(run_ids, await pipe.execute(), strict=True):
        if finished is None:
            await dispatcher.wait(run_id, timeout=300)


async def scenario(
    url: str, client: aioredis.Redis, workflow: Workflow[Any, Any], *, fair: bool, with_b: bool, slots: int
) -> dict[str, Any]:
    await client.flushdb()
    env = {**os.environ, "BENCH_REDIS_URL": url}
    cmd = outlast_worker(url, "--concurrency", str(slots))
    dispatcher = Dispatcher(client, cache_active_version=True)
    a_ids = await start(dispatcher, workflow, "A", A_RUNS, fair)
    workers = await asyncio.gather(*(spawn(cmd, env, b"worker ") for _ in range(WORKERS)))
    try:
        await asyncio.sleep(B_AFTER)  # B arrives a second into A's burst (or nobody does)
        b_ids = await start(dispatcher, workflow, "B", B_RUNS, fair) if with_b else []
        await all_ended(dispatcher, client, a_ids)
        if b_ids:
            await all_ended(dispatcher, client, b_ids)
        a = await records(client, a_ids)
        b = await records(client, b_ids)
    finally:
        await dispatcher.aclose()
        await asyncio.gather(*(stop(w) for w in workers))
    out: dict[str, Any] = {"a_rps": A_RUNS / (max(f for _, _, f in a) - min(s for _, s, _ in a))}
    if b:
        waits = [s - c for c, s, _ in b]
        out.update(b_p50=pct(waits, 0.5), b_p99=pct(waits, 0.99))
    return out


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    median = {name: statistics.median(r[name] for r in results) for name in results[0]}
    return {**median, "a_spread": (min(r["a_rps"] for r in results), max(r["a_rps"] for r in results))}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = redis_from_url(server.url)
        try:
            # Interleaved (each round runs every case once), so the host's drifting load is shared.
            cases = [(fair, with_b) for fair in (True, False) for with_b in (False, True)]
            runs: dict[tuple[bool, bool], list[dict[str, Any]]] = {case: [] for case in cases}
            cpu_runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            for _ in range(REPEATS):
                for fair, with_b in cases:
                    result = await scenario(server.url, client, io_step, fair=fair, with_b=with_b, slots=10)
                    runs[fair, with_b].append(result)
                for fair in (True, False):
                    cpu_runs[fair].append(
                        await scenario(server.url, client, one_step, fair=fair, with_b=False, slots=20)
                    )
            rows = {
                fair: (median_of(runs[fair, False]), median_of(runs[fair, True])) for fair in (True, False)
            }
            cpu = {fair: median_of(cpu_runs[fair]) for fair in (True, False)}
        finally:
            await client.aclose()
    print(f"\n== fairness: A's {A_RUNS:,} queued 20 ms I/O-bound runs, B starts {B_RUNS} {B_AFTER:.0f} s "
          f"later; {WORKERS} workers × 10 slots; medians of {REPEATS} ==")  # fmt: skip
    head = f"{'B start→running p50 ms':>24}{'p99 ms':>10}{'A runs/s alone':>16}{'with B':>10}{'A cost':>8}"
    print(f"{'queue':<30}{head}")
    for fair, label in ((True, "fair (a key per tenant)"), (False, "plain stream (fairness off)")):
        alone, both = rows[fair]
        cost = 1 - both["a_rps"] / alone["a_rps"]
        print(f"{label:<30}{both['b_p50'] * 1e3:>24.1f}{both['b_p99'] * 1e3:>10.1f}"
              f"{alone['a_rps']:>16,.0f}{both['a_rps']:>10,.0f}{cost:>8.1%}")  # fmt: skip
        spreads = [f"{lo:,.0f}-{hi:,.0f}" for lo, hi in (alone["a_spread"], both["a_spread"])]
        print(f"{'':<30}{'A runs/s spread (min-max):':>34}{spreads[0]:>16}{spreads[1]:>10}")
    lower = rows[False][1]["b_p99"] / rows[True][1]["b_p99"]
    print(f"B's p99 {lower:.0f}x lower with fairness")
    spread = {fair: "{:,.0f}-{:,.0f}".format(*cpu[fair]["a_spread"]) for fair in (True, False)}
    print(f"pump cost, CPU-bound one-step runs of A alone, {WORKERS} workers × 20 slots: fair "
          f"{cpu[True]['a_rps']:,.0f} runs/s ({spread[True]}) vs plain {cpu[False]['a_rps']:,.0f} "
          f"({spread[False]}): {cpu[True]['a_rps'] / cpu[False]['a_rps']:.2f}x")  # fmt: skip
