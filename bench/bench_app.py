"""Workflows the benchmark's worker processes run."""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

import outlast

_clients: dict[str, aioredis.Redis] = {}


@outlast.component
async def one(i: int) -> int:
    return i


@outlast.workflow(name="bench_one_step")
async def one_step(i: int) -> int:
    return await one(i)


@outlast.component
async def held(tag: str) -> str:
    client = _clients.get("r") or _clients.setdefault(
        "r", aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    )
    await client.blpop([f"bench:gate:{tag}"], timeout=0)  # held until the bench opens it
    return tag


@outlast.workflow(name="bench_held")
async def held_run(tag: str) -> str:
    return await held(tag)


@outlast.component
async def call_api(i: int, ms: float) -> int:
    await asyncio.sleep(ms / 1000)  # an I/O-bound step: a call to a slow API
    return i


@outlast.workflow(name="bench_io_step")
async def io_step(i: int, ms: float = 20.0) -> int:
    return await call_api(i, ms)
