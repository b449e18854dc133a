"""Workflows for the secured-Redis tests: every kind of Redis work Outlast does, in one run.

``flow`` takes steps, an LLM call under fleet-wide limits (rate limiter and breaker scripts),
publishes an object and progress, waits for input, sleeps durably (the run suspends and a timer
wakes it), runs a child run, and stops at a gate the test opens (where it kills a worker). The
gate is a list on the *admin* connection (``ADMIN_REDIS_URL``): it is the test's, not Outlast's.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast.llm import LLM, Limits, OpenAIProvider

_clients: dict[int, aioredis.Redis] = {}


def _admin() -> aioredis.Redis:
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients[loop] = aioredis.Redis.from_url(os.environ["ADMIN_REDIS_URL"])
    return _clients[loop]


llm = LLM(
    [OpenAIProvider("sim", "outlast-sim", base_url=os.environ.get("SIM_BASE_URL", "http://127.0.0.1:9/v1"),
                    api_key="sk-test", limits=Limits(rpm=600, tpm=100_000, max_concurrency=4))],
    redis=os.environ.get("OUTLAST_REDIS_URL"),
)  # fmt: skip


class Answer(BaseModel):
    ok: bool


@outlast.component
async def double(n: int) -> int:
    return n * 2


@outlast.component
async def gate(name: str) -> str:
    await _admin().blpop([f"gate:{name}"], timeout=0)
    return "open"


@outlast.workflow
async def child(n: int) -> int:
    return await double(n)


@outlast.workflow
async def flow(tag: str) -> dict[str, object]:
    first = await double(1)
    reply = await llm.complete(f"hello {tag}", max_tokens=5)
    outlast.publish("state", {"tag": tag, "tokens": reply.tokens_out})
    outlast.progress(1, total=3)
    answer = await outlast.wait_for_input("approve", Answer, prompt="ok?")
    await outlast.sleep(1.2)  # longer than the worker's hold: suspends, a timer wakes it
    kid = await outlast.run_child(child, {"n": 5})
    opened = await gate(tag)
    outlast.progress(3, total=3)
    return {"first": first, "ok": answer.ok, "child": kid, "gate": opened}


@outlast.workflow
async def parked(tag: str) -> str:
    return await gate(tag)
