"""Workflows whose real event logs (``run_local``) the adapter unit tests translate."""

from __future__ import annotations

import asyncio
from typing import Any

import outlast
from outlast import Retry, component, workflow

#: Tries seen per key, so a component can fail its first try after streaming (in this process).
TRIES: dict[str, int] = {}


@component
async def say(words: list[str]) -> Any:
    for word in words:
        yield word


@component(retry=Retry(attempts=2, backoff_base=0, jitter=False))
async def flaky_say(words: list[str], key: str) -> Any:
    """Streams the first word, fails its first try, then streams everything."""
    TRIES[key] = TRIES.get(key, 0) + 1
    yield words[0]
    if TRIES[key] == 1:
        raise RuntimeError("stream broke")
    for word in words[1:]:
        yield word


@component(fallback="(no answer)")
async def broken_say(words: list[str]) -> Any:
    yield words[0]
    raise RuntimeError("always")


@component
async def slow_say(words: list[str]) -> Any:
    for word in words:
        await asyncio.sleep(0.05)  # past the 30 ms output flush: frames of concurrent steps interleave
        yield word


@workflow
async def chat(messages: list[dict[str, str]]) -> str:
    """Echoes the last message, word by word, with status, progress, an object and a custom event."""
    outlast.status("thinking")
    words = f"You said: {messages[-1]['content']}".split(" ")
    outlast.publish("draft", {"words": 0})
    reply = await say([w + " " for w in words])
    outlast.progress(1, total=1, label="reply")
    outlast.publish("draft", {"words": len(words), "tags": ["a/b"]})
    outlast.emit("replied", {"words": len(words)})
    return str(reply)


@workflow
async def retried_chat(messages: list[dict[str, str]], key: str) -> str:
    return str(await flaky_say(["Hello ", "again ", "world."], key))


@workflow
async def fallback_chat(messages: list[dict[str, str]]) -> str:
    return str(await broken_say(["Partial "]))


@workflow
async def concurrent(n: int = 2) -> str:
    parts = await outlast.gather(*(slow_say([f"{i}a ", f"{i}b "]) for i in range(n)))
    return "".join(parts)


@workflow
async def fails(messages: list[dict[str, str]]) -> str:
    await say(["doomed "])
    raise ValueError("no reply today")


@workflow
async def asks(messages: list[dict[str, str]]) -> str:
    """Waits for an input, then answers with it."""
    value = await outlast.wait_for_input("name", str, prompt="Your name?")
    return str(await say([f"Hi {value}"]))
