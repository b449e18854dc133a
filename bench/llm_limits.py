"""LLM rate limiter: its overhead per call vs a bare Redis round trip, and its accuracy across a fleet.

* **Overhead** — one process, one asyncio client, the embedded Valkey (AOF on): a PING, the
  limiter's per-call cycle (``acquire`` + ``settle`` + ``release``, 3 round trips, the first a Lua
  script over the sliding window) and the same cycle plus the breaker's ``allow`` and
  ``record_success`` (what every ``LLM`` call adds), measured interleaved, side by side.
* **Accuracy** — 3 worker *processes* (``outlast worker`` on this file) run a workflow fanning out
  LLM calls through ``outlast.llm.LLM``: a primary simulator behind a fleet-wide limit and an open
  fallback. The primary simulator enforces nothing, so what it counts is what our limiter let
  through: the peak of accepted requests in any window, divided by the limit (≤ 1.00 is exact;
  1.00 also means the capacity was fully used), and where the rest went. The simulators run in
  their own processes, and the ``LLM``'s default ``window_margin`` (0.5 s) absorbs the jitter
  between a grant's timestamp in Redis and the request's arrival at the provider.

``main()`` is wired into bench/run.py. The worker processes import this module as their app; the
``BENCH_LLM_*`` environment variables configure its ``LLM``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

import outlast
from outlast.control import Dispatcher
from outlast.llm import LLM, CircuitBreaker, LimitKey, Limits, OpenAIProvider, RateLimiter
from outlast.llm.limits import Grant
from outlast.store.embedded import EmbeddedServer

HERE = Path(__file__).resolve()
SAMPLES = 3000
WORKERS = 3
# label, limit (requests per window), window s, runs (one per worker), calls per run, gather limit, ttft ms
SCENARIOS = [
    ("60 RPM, 300 calls at once", 60, 60.0, 3, 100, 50, 0),
    ("20 per 2 s sliding window, 900 calls", 20, 2.0, 3, 300, 2, 50),
]


def _bench_llm() -> LLM | None:
    env = os.environ
    if "BENCH_LLM_REDIS" not in env:
        return None  # imported by bench/run.py, not by a worker
    limits = Limits(rpm=int(env["BENCH_LLM_LIMIT"]), tpm=None, max_concurrency=None,
                    window_s=float(env["BENCH_LLM_WINDOW"]))  # fmt: skip
    primary = OpenAIProvider("primary", "outlast-sim", base_url=env["BENCH_LLM_PRIMARY"],
                             api_key="sk-bench-key", limits=limits)  # fmt: skip
    fallback = OpenAIProvider(
        "fallback", "outlast-sim", base_url=env["BENCH_LLM_FALLBACK"], api_key="sk-bench-key"
    )
    return LLM([primary, fallback], redis=env["BENCH_LLM_REDIS"], max_wait=0.2)


_LLM = _bench_llm()


@outlast.workflow(name="bench_llm_fanout")
async def llm_fanout(calls: int, limit: int, tag: str) -> dict[str, int]:
    if _LLM is None:
        raise RuntimeError("BENCH_LLM_* environment variables are not set")
    llm = _LLM
    replies = await outlast.gather(
        *(llm.complete(f"{tag} {i}", max_tokens=8) for i in range(calls)), limit=limit
    )
    return dict(Counter(reply.provider for reply in replies))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def overhead(client: aioredis.Redis) -> list[tuple[str, list[float]]]:
    limiter = RateLimiter(client)
    breaker = CircuitBreaker(client, "bench")
    key = LimitKey("bench", "model")
    limits = Limits(rpm=10**9, tpm=10**12, max_concurrency=10**6)

    async def cycle() -> None:
        grant = await limiter.acquire(key, tokens=1200, limits=limits)
        assert isinstance(grant, Grant)
        await limiter.settle(grant, 900)
        await limiter.release(grant)

    async def as_llm_calls() -> None:
        await breaker.allow()
        grant = await limiter.acquire(key, tokens=1200, limits=limits)
        assert isinstance(grant, Grant)
        await asyncio.gather(limiter.settle(grant, 900), limiter.release(grant), breaker.record_success())

    rows: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("bare Redis round trip (PING)", client.ping),
        ("limiter: acquire + settle + release", cycle),
        ("LLM call: + breaker, reports in parallel", as_llm_calls),
    ]
    samples: dict[str, list[float]] = {label: [] for label, _ in rows}
    for _ in range(200):  # warm-up: scripts loaded, connections open
        for _, call in rows:
            await call()
    for _ in range(SAMPLES):  # interleaved, so drift affects every row alike
        for label, call in rows:
            t0 = time.perf_counter()
            await call()
            samples[label].append(time.perf_counter() - t0)
    return list(samples.items())


async def spawn_worker(
    url: str, env: dict[str, str], app: str = str(HERE), concurrency: int = 1, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    cmd = [sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", app, "--redis", url,
           "--concurrency", str(concurrency), "--heartbeat", "0.2", "--lease-timeout", "1"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    while not (line := await asyncio.wait_for(proc.stdout.readline(), 60)).startswith(b"worker "):
        if not line:
            raise RuntimeError("a bench worker exited before it was ready")
    return proc


async def spawn_simulator(ttft_ms: int, seed: int, *options: str) -> tuple[asyncio.subprocess.Process, str]:
    """A simulator in its own process (so its CPU does not skew arrival times); its root URL.
    ``options``: more ``python -m outlast.llm.simulator`` options (limits, throttle windows)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "outlast.llm.simulator", "--port", str(port), "--ttft-ms", str(ttft_ms),
           "--seed", str(seed), "--log-level", "warning", *options]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while True:
            try:
                (await http.get(f"{url}/admin/stats")).raise_for_status()
                return proc, url
            except httpx.HTTPError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bench simulator did not start") from None
                await asyncio.sleep(0.05)  # nothing to await: uvicorn has no readiness signal


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*(proc.wait() for proc in procs))


async def accuracy(url: str, client: aioredis.Redis, scenario: tuple[Any, ...]) -> dict[str, Any]:
    label, limit, window, runs, calls, fan, ttft = scenario
    await client.flushdb()
    (primary, primary_url), (fallback, fallback_url) = await asyncio.gather(
        spawn_simulator(ttft, 1), spawn_simulator(ttft, 2)
    )
    procs = [primary, fallback]
    try:
        env = {
            **os.environ, "BENCH_LLM_REDIS": url, "BENCH_LLM_PRIMARY": f"{primary_url}/v1",
            "BENCH_LLM_FALLBACK": f"{fallback_url}/v1", "BENCH_LLM_LIMIT": str(limit),
            "BENCH_LLM_WINDOW": str(window),
        }  # fmt: skip
        workers = list(await asyncio.gather(*(spawn_worker(url, env) for _ in range(WORKERS))))
        procs += workers
        dispatcher = Dispatcher(client)
        t0 = time.perf_counter()
        inputs = [{"calls": calls, "limit": fan, "tag": f"r{n}"} for n in range(runs)]
        started = [await dispatcher.start("bench_llm_fanout", i) for i in inputs]
        results = [await dispatcher.result(s.run_id, timeout=300) for s in started]
        elapsed = time.perf_counter() - t0
        await stop(workers)
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{primary_url}/admin/stats", params={"window": window})).json()
    finally:
        await stop(procs)
    served = sum((Counter(r) for r in results), Counter())
    return {
        "label": label, "limit": limit, "window": window, "calls": runs * calls, "elapsed": elapsed,
        "primary": served["primary"], "fallback": served["fallback"], "peak": stats["max_requests_in_window"],
        "non_200": sum(v for k, v in stats["requests_by_status"].items() if k != "200"),
    }  # fmt: skip


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            rows = await overhead(client)
            figures = [await accuracy(server.url, client, scenario) for scenario in SCENARIOS]
        finally:
            await client.aclose()

    rtt = pct(rows[0][1], 0.5)
    print("\n== LLM rate limiter: Redis overhead per call (sequential, one client) ==")
    print(f"{'measurement':<44}{'p50 µs':>10}{'p99 µs':>10}{'x RTT p50':>12}")
    for label, samples in rows:
        p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
        print(f"{label:<44}{p50:>10.1f}{p99:>10.1f}{p50 / rtt:>12.2f}")
    print(f"samples: {SAMPLES} of each, interleaved; sliding window holding up to {3 * SAMPLES + 600} grants")
    print(
        f"\n== LLM rate limiter: accuracy with {WORKERS} worker processes (primary limited, fallback open) =="
    )
    print(f"{'scenario':<42}{'peak/limit':>12}{'primary':>9}{'fallback':>10}{'errors':>8}{'run s':>8}")
    for f in figures:
        ratio = f"{f['peak']}/{f['limit']} = {f['peak'] / f['limit']:.2f}"
        print(
            f"{f['label']:<42}{ratio:>12}{f['primary']:>9}{f['fallback']:>10}{f['non_200']:>8}{f['elapsed']:>8.1f}"
        )
    print("peak = most requests the primary simulator accepted in any window of the limit's length")


if __name__ == "__main__":
    asyncio.run(main())
