"""Acceptance 1: three worker processes, 300 LLM calls, a primary limited to 60 RPM, an open fallback."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.llm.simulator import SimulatorServer

from .llm_support import all_events, statuses

APP = Path(__file__).resolve().parent / "llm_fleet_app.py"
WORKERS, RUNS, CALLS, RPM = 3, 3, 100, 60


async def spawn_worker(redis_url: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """A worker process running the fleet app, once it is ready (its stderr log is discarded)."""
    cmd = [sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", str(APP),
           "--redis", redis_url, "--heartbeat", "0.2", "--lease-timeout", "1",
           "--concurrency", "1"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    while not (line := await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"worker "):
        assert line, "the worker exited before it was ready"
    return proc


async def test_three_workers_share_the_primarys_limit_and_spill_the_rest(
    redis: aioredis.Redis, redis_url: str
) -> None:
    with SimulatorServer(seed=1, rpm_limit=RPM) as primary, SimulatorServer(seed=2) as fallback:
        env = {
            **os.environ, "OUTLAST_LLM_PRIMARY": primary.base_url, "OUTLAST_LLM_FALLBACK": fallback.base_url,
            "OUTLAST_LLM_RPM": str(RPM), "OUTLAST_LLM_REDIS": redis_url,
        }  # fmt: skip
        procs = await asyncio.gather(*(spawn_worker(redis_url, env) for _ in range(WORKERS)))
        try:
            dispatcher = Dispatcher(redis)
            run_ids = [(await dispatcher.start("llm_fleet", {"calls": CALLS, "tag": f"run{n}"})).run_id
                       for n in range(RUNS)]  # fmt: skip
            results = [await dispatcher.result(run_id, timeout=45) for run_id in run_ids]
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*(proc.wait() for proc in procs))
        served = sum((Counter(r) for r in results), Counter())
        assert served == {"primary": RPM, "fallback": RUNS * CALLS - RPM}
        stats = primary.stats()
        assert stats["max_requests_in_any_60s_window"] <= RPM  # counted by the primary itself
        assert statuses(primary) == {"200": RPM}  # no 429 storm: not one 429
        assert statuses(fallback) == {"200": RUNS * CALLS - RPM}

        workers, by_step = set(), Counter()
        for run_id in run_ids:
            events = await all_events(dispatcher.store, run_id)
            workers |= {e.data["worker"] for e in events if e.type == ev.RUN_STARTED}
            steps = [e for e in events if e.type == ev.STEP_COMPLETED]
            assert len({e.step for e in steps}) == len(steps) == CALLS  # the trace has every call, once
            by_step.update(e.data["result"]["provider"] for e in steps)
        assert by_step == served  # the trace shows which provider served each call
        assert len(workers) == WORKERS  # every worker process took part
