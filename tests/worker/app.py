"""Workflows that worker processes run in the compute-plane tests.

Side effects are counted in Redis at ``APP_REDIS_URL``: ``INCR ran:<tag>:<i>`` when a step's
body *starts*, so a test can tell exactly which bodies ran how often, across processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast import component, workflow
from outlast.store.client import redis_from_url

_clients: dict[str, aioredis.Redis] = {}


def counters() -> aioredis.Redis:
    client = _clients.get("r")
    if client is None:
        client = _clients["r"] = redis_from_url(os.environ["APP_REDIS_URL"])
    return client


@component
async def work(tag: str, i: int, delay: float) -> int:
    await counters().incr(f"ran:{tag}:{i}")
    await asyncio.sleep(delay)  # the step "does work" for a while: the test kills workers meanwhile
    return i


@workflow
async def multi(tag: str, steps: int = 5, delay: float = 0.05) -> int:
    total = 0
    for i in range(steps):
        total += await work(tag, i, delay)
        outlast.progress(done=i + 1, total=steps)
    return total


@component
async def hang_step(tag: str) -> None:
    await counters().incr(f"ran:{tag}:hang")
    try:
        outlast.status("hanging")  # tests wait for this: the body is inside the try now
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await counters().incr(f"cancelled:{tag}")
        raise


@workflow
async def hang(tag: str) -> None:
    await hang_step(tag)


@component
async def noop(i: int) -> int:
    return i


@workflow
async def quick(n: int = 1) -> int:
    for i in range(n):
        await noop(i)
    return n


@component
async def gate(tag: str) -> str:
    """Blocks until the test pushes to ``gate:<tag>`` (a blocking pop: no polling)."""
    await counters().incr(f"ran:{tag}:gate")
    await counters().blpop([f"gate:{tag}"], timeout=0)
    return "open"


@workflow
async def gated(tag: str) -> str:
    await work(tag, 0, 0.0)
    opened = await gate(tag)
    await work(tag, 1, 0.0)
    return opened


class Decision(BaseModel):
    ok: bool


@workflow
async def approval(tag: str, timeout: float | None = None) -> str:
    """Waits for ``approve`` (a Decision); with a timeout, says so when none came."""
    await work(tag, 0, 0.0)
    try:
        decision = await outlast.wait_for_input("approve", Decision, timeout=timeout, prompt="Approve?")
    except outlast.InputTimeout:
        return "timed out"
    await work(tag, 1, 0.0)
    return "approved" if decision.ok else "rejected"


@workflow
async def napper(seconds: float) -> float:
    await outlast.sleep(seconds)
    return seconds


@workflow
async def fan_out(tag: str, children: int = 20, delay: float = 0.1) -> int:
    """Starts ``children`` child runs of ``multi`` at once and waits for all of them."""
    calls = [
        outlast.run_child(multi, {"tag": f"{tag}-{i}", "steps": 3, "delay": delay}) for i in range(children)
    ]
    return sum(await outlast.gather(*calls))


@component
async def fragile(tag: str, i: int, poison: bool) -> int:
    """Kills its own worker process (SIGKILL) the first time it runs, or every time if ``poison``."""
    runs = await counters().incr(f"ran:{tag}:{i}")
    if poison or runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@workflow
async def crashy(tag: str, steps: int = 3, poison_at: int = -1) -> int:
    """Every step kills its worker once before it completes; step ``poison_at`` does so every time."""
    total = 0
    for i in range(steps):
        total += await fragile(tag, i, i == poison_at)
    return total


@workflow(upgrade_safe=True)
async def anywhere(tag: str) -> str:
    """Upgrade-safe: any version's worker may run it (if its code has it)."""
    await work(tag, 0, 0.0)
    return tag


@component
async def explode(tag: str, size: int) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET http://example.invalid %s", tag)  # as httpx logs
    raise RuntimeError(f"{tag} exploded: " + "x" * size)


@workflow
async def boom(tag: str, size: int = 10) -> None:
    """Fails with an error message of ``size`` characters and more."""
    await explode(tag, size)


@workflow
async def traced(tag: str, nap: float = 1.5) -> str:
    """A step, a durable sleep (the run suspends: attempt 1 ends), then a gate a test kills the
    worker at (attempt 2 is lost and taken over), then a last step: the OpenTelemetry test's run."""
    await work(tag, 0, 0.0)
    await outlast.sleep(nap)
    opened = await gate(tag)
    await work(tag, 1, 0.0)
    return opened


@component
async def chatty_step(tag: str) -> str:
    logging.getLogger("app.flows").info("step of %s ran", tag)  # the app's own logging
    return tag


@workflow
async def chatty(tag: str) -> str:
    """Logs from a step through the standard logging module, then waits at a gate."""
    await chatty_step(tag)
    return await gate(tag)
