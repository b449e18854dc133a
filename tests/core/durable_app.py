"""Workflows for the durable tests; also run as a child process that gets SIGKILLed.

Side effects are counted in Redis (``INCR count:<step>``) so a test can tell how often each
step's body really ran, across processes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis

import outlast
from outlast import component, workflow
from outlast.store.client import redis_from_url

#: Set by the test or the child process: where the side-effect counters live.
COUNTERS: dict[str, Any] = {}


async def count(name: str) -> None:
    client: aioredis.Redis = COUNTERS["redis"]
    await client.incr(f"count:{name}")


@component
async def fetch(n: int) -> int:
    await count(f"fetch{n}")
    return n * 10


@component
async def summarise(values: list[int]):  # streaming component
    await count("summarise")
    for value in values:
        yield f"{value};"


@component
async def block_forever(n: int) -> int:
    await count(f"block{n}")
    outlast.status(f"blocking at {n}")  # tests wait for this: the body has run its side effect
    if not COUNTERS.get("unblock"):
        await asyncio.Event().wait()  # stays here until the process is killed or the task cancelled
    return n


@workflow
async def pipeline(steps: int = 5, block_at: int = -1) -> dict[str, Any]:
    outlast.status("starting")
    values = []
    for n in range(steps):
        if n == block_at:
            await block_forever(n)
        values.append(await fetch(n))
        outlast.progress(done=n + 1, total=steps)
    text = await summarise(values)
    outlast.publish("summary", {"values": values})
    return {"total": sum(values), "text": text}


async def _child(url: str, run_id: str) -> None:
    client = redis_from_url(url)
    COUNTERS["redis"] = client
    runner = outlast.Runner(outlast.RedisStore(client))
    await runner.execute(pipeline, run_id)


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2]))
