"""The onboarding example's batch against its floor: how close the fleet runs to an RPM limit.

3 worker processes (``outlast worker examples.onboarding``) enrich 5 fixture companies (~240 LLM
calls) through one provider: an LLM simulator in its own process that enforces the limit itself
(``--rpm-limit`` over ``--rate-window-s``, answering 429 beyond it, as a provider does) and
injects one 429 burst (``--throttle``). The workers share the same limit through Redis.

The floor: a sliding window lets the first ``limit`` calls through at once and each further
``limit`` one window later, so call ``k`` (from 0) cannot start before ``k // limit * window``
seconds, and the batch's ``calls`` not before ``(calls - 1) // limit * window`` (about calls ÷
RPM limit, less the first window's allowance). Printed: calls, the batch's time, the floor,
utilisation = floor / time (target ≥ 0.9; the limiter's window margin, 1 s here, alone caps it
at window / (window + 1)), the peak of calls in any window against the limit, and the 429s: from
the injected burst, and beyond it (target 0).

The burst is placed where the traffic is: calls go out in a wave each time the window frees
capacity, so the bench waits for the first call and throttles 1 s around the third wave.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from llm_limits import spawn_simulator, spawn_worker, stop
from outlast.control import Dispatcher
from outlast.store.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the examples package lives at the repo root

from examples.common.sitehost import SiteHost  # noqa: E402
from examples.onboarding.site import companies, site_pages  # noqa: E402

COMPANIES, WORKERS = 5, 3
LIMIT, WINDOW = 80, 20.0  # calls per window: 240 RPM
MARGIN = 1.0  # seconds the limiter adds to the window (delivery jitter on a busy 2-core machine)


async def inject_burst(sim_url: str) -> None:
    """Once the first call arrived, throttle 1 s around the third wave of calls."""
    async with httpx.AsyncClient(base_url=sim_url) as http:
        for _ in range(6000):  # up to 5 minutes
            if seen := (await http.get("/admin/requests")).json():
                break
            await asyncio.sleep(0.05)  # the simulator has no "first request" notification
        else:
            return
        wave = seen[0]["at"] + 2 * (WINDOW + MARGIN)
        burst = {"start": wave - 0.3, "end": wave + 0.7, "retry_after": 1.0}
        (await http.patch("/admin/knobs", json={"throttles": [burst]})).raise_for_status()


async def batch(url: str, client: aioredis.Redis) -> dict[str, float]:
    fixture = companies(COMPANIES)
    sim, sim_url = await spawn_simulator(0, 1, "--rpm-limit", str(LIMIT), "--rate-window-s", str(WINDOW),
                                         "--request-log", "5000")  # fmt: skip
    procs = [sim]
    try:
        with SiteHost(site_pages(fixture)) as site:
            env = {**os.environ, "OUTLAST_EXAMPLE_SIM": sim_url, "OUTLAST_EXAMPLE_RPM": str(LIMIT),
                   "OUTLAST_EXAMPLE_WINDOW": str(WINDOW), "OUTLAST_EXAMPLE_WINDOW_MARGIN": str(MARGIN),
                   "OUTLAST_REDIS_URL": url}  # fmt: skip
            procs += await asyncio.gather(
                *(
                    spawn_worker(url, env, "examples.onboarding", concurrency=20, cwd=ROOT)
                    for _ in range(WORKERS)
                )
            )
            dispatcher = Dispatcher(client)
            urls = [site.url + c.root for c in fixture]
            started = time.perf_counter()
            run = await dispatcher.start("onboarding", {"urls": urls})
            burst = asyncio.create_task(inject_burst(sim_url))
            profiles = await dispatcher.result(run.run_id, timeout=600)
            await burst
            elapsed = time.perf_counter() - started
            async with httpx.AsyncClient() as http:
                stats = (await http.get(f"{sim_url}/admin/stats", params={"window": WINDOW})).json()
                arrivals = sorted(r["at"] for r in (await http.get(f"{sim_url}/admin/requests")).json())
    finally:
        await stop(procs)
    calls = stats["accepted_requests"]
    floor = (calls - 1) // LIMIT * WINDOW
    return {
        "profiles": len(profiles), "calls": calls, "answered": stats["requests_by_status"].get("200", 0),
        "elapsed": elapsed, "floor": floor, "llm_phase": arrivals[-1] - arrivals[0],
        "peak": stats["max_requests_in_window"],
        "burst_429": stats["throttled_requests"], "limit_429": stats["rate_limited_requests"],
    }  # fmt: skip


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            f = await batch(server.url, client)
        finally:
            await client.aclose()
    print(f"\n== onboarding batch: {COMPANIES} companies, {WORKERS} worker processes, "
          f"limit {LIMIT} calls per {WINDOW:g} s ({LIMIT * 60 / WINDOW:g} RPM) ==")  # fmt: skip
    print(f"{'LLM calls (accepted / answered 200)':<44}{f['calls']:>8} / {f['answered']}")
    print(f"{'batch time vs floor, s':<44}{f['elapsed']:>8.1f} vs {f['floor']:.1f}")
    print(f"{'utilisation (floor / time; target >= 0.9)':<44}{f['floor'] / f['elapsed']:>8.2f}")
    print(f"{'first to last LLM call, s; floor / that':<44}{f['llm_phase']:>8.1f}; "
          f"{f['floor'] / f['llm_phase']:.2f}")  # fmt: skip
    print(f"{'peak calls in any window / limit':<44}{f['peak']:>8} / {LIMIT}")
    print(f"{'429s: injected burst / beyond it (target 0)':<44}{f['burst_429']:>8} / {f['limit_429']}")


if __name__ == "__main__":
    asyncio.run(main())
