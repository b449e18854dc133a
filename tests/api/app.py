"""Workflows the API tests run in a real worker process (``outlast worker tests/api/app.py``).

A gate is a Redis list: ``wait_gate`` blocks on BLPOP until the test pushes to it, so a test can
hold a run mid-stream for as long as it needs, without sleeping.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis

import outlast
from outlast import component, workflow
from outlast.store.client import redis_from_url

_clients: dict[int, aioredis.Redis] = {}


def _redis() -> aioredis.Redis:
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients[loop] = redis_from_url(os.environ["OUTLAST_REDIS_URL"])  # (a cluster URL too)
    return _clients[loop]


@component
async def noop(i: int) -> int:
    return i


@component
async def wait_gate(gate: str) -> bool:
    reply = await _redis().blpop([gate], timeout=50)
    return reply is not None


@workflow
async def noop3(x: int = 0) -> int:
    """Three no-op steps."""
    for i in range(3):
        await noop(i)
    return x


@workflow(secret_args=("token",))
async def greet(name: str, times: int = 1, token: str = "", gate: str = "") -> dict[str, Any]:
    """Greets; publishes an object and reports progress (after ``gate`` opens, if given)."""
    outlast.status(f"greeting {name}")
    outlast.publish("greeting", {"name": name, "count": 0})
    if gate:
        await wait_gate(gate)
    for i in range(times):
        await noop(i)
        outlast.progress(done=i + 1, total=times)
        outlast.publish("greeting", {"name": name, "count": i + 1})
    return {"text": f"hello {name}", "times": times}


@workflow
async def ticks(n: int, every: int = 0, gate: str = "", pause: int = 0) -> int:
    """Emits ``n`` custom events; with ``gate``, stops after ``pause`` of them until the gate opens.

    ``every`` > 0 yields to the loop every that many events so the stream is written over time.
    """
    for i in range(n):
        if gate and i == pause:
            await wait_gate(gate)
        outlast.emit("tick", i)
        if every and i % every == every - 1:
            await asyncio.sleep(0.001)
    return n


@workflow
async def fails(message: str = "boom") -> None:
    """Always fails."""
    await noop(0)
    raise RuntimeError(message)


#: Tries seen per ``fail_first`` key (this worker process), so a chat can fail its first try.
_CHAT_TRIES: dict[str, int] = {}


@component(retry=outlast.Retry(attempts=2, backoff_base=0, jitter=False))
async def answer(words: list[str], gate: str = "", pause: int = 0, fail_first: str = "") -> Any:
    """Streams ``words``; waits at ``gate`` before word ``pause``; fails the first try of each
    ``fail_first`` key after streaming its first word."""
    _CHAT_TRIES[fail_first] = _CHAT_TRIES.get(fail_first, 0) + 1
    for i, word in enumerate(words):
        if gate and i == pause:
            await wait_gate(gate)
        if fail_first and i == 1 and _CHAT_TRIES[fail_first] == 1:
            raise RuntimeError("the model's stream broke")
        yield word


@workflow
async def echo_chat(
    messages: list[dict[str, str]], gate: str = "", pause: int = 0, fail_first: str = ""
) -> str:
    """A chat workflow: answers the last message word by word (see ``answer``)."""
    outlast.status("answering")
    text = f"You said: {messages[-1]['content']} ({len(messages)} messages so far)"
    reply = await answer([w + " " for w in text.split(" ")], gate, pause, fail_first)
    outlast.publish("chat", {"turns": len(messages), "last": messages[-1]["content"]})
    return str(reply)
