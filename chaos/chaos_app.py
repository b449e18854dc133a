"""The soak's workflow: long runs of work steps, streamed text and durable sleeps between phases.

Every step body records when it started (server time) in ``chaos:starts:<run>:<step>`` at
``CHAOS_REDIS_URL``, so the soak can tell whether a body ever ran after its step committed.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

import outlast

_clients: dict[str, aioredis.Redis] = {}


def _redis() -> aioredis.Redis:
    client = _clients.get("r")
    if client is None:
        client = _clients["r"] = aioredis.Redis.from_url(os.environ["CHAOS_REDIS_URL"])
    return client


async def _started(key: str) -> None:
    seconds, micros = await _redis().time()
    await _redis().rpush(f"chaos:starts:{key}", f"{seconds}.{micros:06d}")


@outlast.component
async def work(key: str, seconds: float) -> str:
    await _started(key)
    await asyncio.sleep(seconds)  # the worker may be SIGKILLed meanwhile
    return key


@outlast.component
async def speak(key: str, words: int, pause: float):  # streaming: yields text
    await _started(key)
    for i in range(words):
        yield f"{key}:{i} "
        await asyncio.sleep(pause)


@outlast.workflow
async def long_run(tag: str, phases: int, steps: int, step_seconds: float, nap: float) -> int:
    done = 0
    for phase in range(phases):
        outlast.status(f"phase {phase}")
        for i in range(steps):
            await work(f"{tag}:{phase}:{i}", step_seconds)
            done += 1
        await speak(f"{tag}:{phase}:speak", 20, step_seconds / 20)
        outlast.progress(phase + 1, total=phases, label="phases")
        if phase < phases - 1:
            await outlast.sleep(nap)  # durable: longer than a worker holds a waiting run
    return done
