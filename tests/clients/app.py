"""Workflows the browser-client tests run in a real worker (started by :mod:`.stack`).

A gate is a Redis list: the run blocks on BLPOP until the test pushes to it, so a test holds a
run mid-stream for as long as it needs (an API restart, a page reload) without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

import outlast
from outlast import Retry, component, workflow
from tests.api.app import _redis  # the worker runs from the repository root


@component
async def chapter(title: str, parts: int, gates: list[str], every: int) -> AsyncIterator[str]:
    """Streams ``parts`` sentences; before sentence ``k * every`` it waits for gate ``k - 1``."""
    tags = ["durable", "streamed", "resumed"]
    for i in range(parts):
        if every and i and i % every == 0 and len(gates) >= i // every:
            await _redis().blpop([gates[i // every - 1]], timeout=50)
        yield f"part {i}. "
        outlast.publish("doc", {"title": title, "parts": i + 1, "tags": tags[: i % 3 + 1]})
        outlast.progress(done=i + 1, total=parts, label="parts")


@workflow
async def story(title: str = "t", parts: int = 10, gates: list[str] | None = None, every: int = 0) -> str:
    """One streaming step; published object ``doc`` and progress follow each sentence."""
    outlast.status("writing")
    return await chapter(title, parts, gates or [], every)


@component(retry=Retry(attempts=2, backoff_base=0, jitter=False))
async def shaky(text: str, counter: str) -> AsyncIterator[str]:
    """The first try streams a draft and then fails; the second streams ``text``."""
    if await _redis().incr(counter) == 1:
        yield "a draft that will fail "
        raise RuntimeError("the model stalled")
    yield text


@workflow
async def flaky(text: str, counter: str) -> str:
    return await shaky(text, counter)


class Approval(BaseModel):
    ok: bool


@workflow
async def approve(draft: str) -> str:
    """Waits for a human's ``approve`` input."""
    decision = await outlast.wait_for_input("approve", Approval, prompt="Publish this draft?")
    return f"{draft}: {'approved' if decision.ok else 'rejected'}"
