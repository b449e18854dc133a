"""Workflows the console's browser tests run in real worker processes.

A gate is a Redis list: ``wait_gate`` blocks on BLPOP until the test pushes to it, so a test can
hold a run mid-stream (to reload the page, or to kill the worker) without sleeping.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from pydantic import BaseModel, Field

import outlast
from outlast import Retry, component, workflow
from outlast.llm import LLM, OpenAIProvider, Price
from tests.api.app import _redis  # the worker runs from the repository root

#: The LLM simulator the tests start (``outlast llm-sim`` serves the same), driven by the openai SDK.
SIM = os.environ.get("OUTLAST_CONSOLE_LLM", "http://127.0.0.1:8100/v1")
llm = LLM(
    [OpenAIProvider("sim", "outlast-sim", base_url=SIM, api_key="sk-console-0123456789",
                    price=Price(input_per_mtok=2.0, output_per_mtok=8.0))]
)  # fmt: skip


@component
async def say(text: str) -> AsyncIterator[str]:
    """Streams ``text`` word by word."""
    for word in text.split(" "):
        yield word + " "


@component
async def wait_gate(gate: str) -> bool:
    reply = await _redis().blpop([gate], timeout=50)
    return reply is not None


class Address(BaseModel):
    city: str
    zip: str = ""


@workflow
async def story(
    topic: str,
    words: Annotated[int, Field(ge=1, le=500)] = 6,
    tone: Literal["plain", "cheerful"] = "plain",
    loud: bool = False,
    tags: list[str] | None = None,
    address: Address | None = None,
    gate: str = "",
) -> str:
    """Tells a story in ``words`` streamed steps; waits for ``gate`` half-way (if given)."""
    outlast.status(f"writing about {topic}")
    outlast.publish("story", {"topic": topic, "tags": tags or [], "done": 0})
    parts: list[str] = []
    for i in range(words):
        if gate and i == words // 2:
            await wait_gate(gate)
        word = f"{topic}-{i}" + ("!" if loud else "") + (" :)" if tone == "cheerful" else "")
        parts.append(await say(word))
        outlast.progress(done=i + 1, total=words, label="words")
        outlast.publish("story", {"topic": topic, "tags": tags or [], "done": i + 1})
    outlast.publish("address", address.model_dump() if address else None)
    return "".join(parts)


class Approval(BaseModel):
    approved: bool
    note: str = ""


@workflow
async def approve(item: str) -> dict[str, object]:
    """Asks a human to approve ``item``, then for a secret code."""
    await say(f"reviewing {item}")
    answer = await outlast.wait_for_input("approval", Approval, prompt=f"Approve {item}?")
    code = await outlast.wait_for_input("code", str, prompt="The release code", secret=True)
    return {"approved": answer.approved, "note": answer.note, "code_length": len(code)}


@workflow
async def hold(gate: str) -> str:
    """Streams a line, then waits for ``gate`` (to be cancelled)."""
    await say("started and holding")
    await wait_gate(gate)
    return "released"


@workflow
async def big(steps: int = 2000) -> int:
    """``steps`` streamed steps: a large run (events, trace rows) for the rendering figure."""
    for i in range(steps):
        await say(f"s{i} a b")
        outlast.progress(done=i + 1, total=steps)
        outlast.status(f"step {i + 1} of {steps}")
    return steps


@workflow
async def ask(question: str) -> str:
    """Streams an LLM's answer (tokens and cost show in the runs list and the trace)."""
    outlast.status("asking the model")
    reply = await llm.stream([{"role": "user", "content": question}], max_tokens=40)
    return reply.text


@component
async def inner(topic: str) -> str:
    return topic.upper()


@component
async def outer(topic: str) -> str:
    """A step that calls a step: nested in the trace."""
    return await inner(topic) + "!"


@component(retry=Retry(attempts=3, backoff_base=0.01, jitter=False))
async def flaky(counter: str) -> int:
    """Fails its first try (a Redis counter survives the retry)."""
    tries = int(await _redis().incr(counter))
    if tries == 1:
        raise RuntimeError("first try fails")
    return tries


@component(fallback="the fallback")
async def broken() -> str:
    raise ValueError("always broken")


@workflow
async def tour(topic: str, counter: str) -> dict[str, object]:
    """Nesting, a retry, a fallback, a durable sleep and a child run: every kind of trace span."""
    shout = await outer(topic)
    tries = await flaky(counter)
    fallback = await broken()
    await outlast.sleep(0.2)
    child = await outlast.run_child(story, {"topic": topic, "words": 2})
    return {"shout": shout, "tries": tries, "fallback": fallback, "child": child}
