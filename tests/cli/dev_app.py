"""The app the `outlast dev` and live-terminal tests serve (copied into a temporary folder as flows.py,
so that editing it there reloads the workers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

import outlast
from outlast.llm import LLM, OpenAIProvider, Price

# No base_url and no key here: `outlast dev` points the OpenAI SDK at its simulator through
# OPENAI_BASE_URL / OPENAI_API_KEY when no provider key is set.
llm = LLM([OpenAIProvider("sim", "gpt-4o-mini", price=Price(0.15, 0.6))])


@outlast.component
async def research(topic: str) -> list[str]:
    return [f"{topic} survives crashes"]


@outlast.component
async def write(heading: str, words: int = 3, pause: float = 0.0) -> AsyncIterator[str]:
    for i in range(words):
        if pause:
            await asyncio.sleep(pause)
        yield f"{heading}-{i} "


@outlast.workflow
async def blog(topic: str) -> dict[str, Any]:
    notes = await research(topic)
    outlast.progress(0, 2, label="sections")
    sections = []
    for i, heading in enumerate(["Intro", "Body"]):
        sections.append(await write(heading))
        outlast.progress(i + 1, 2, label="sections")
    return {"topic": topic, "notes": notes, "sections": sections}


@outlast.workflow
async def slow(words: int = 30, pause: float = 0.1) -> str:
    """Streams for words × pause seconds: long enough to be interrupted or reloaded mid-step."""
    first = await write("slow", words, pause)
    second = await write("tail", 3)
    return first + second


class Approval(BaseModel):
    ok: bool


@outlast.component
async def prepare(doc: str) -> str:
    return doc.upper()


@outlast.component
async def prepare_v2(doc: str) -> str:
    return doc.lower()


@outlast.workflow
async def review(doc: str) -> dict[str, Any]:
    prepared = await prepare(doc)
    got = await outlast.wait_for_input("approve", Approval, prompt="Approve?")
    return {"doc": prepared, "ok": got.ok}


@outlast.workflow
async def ask(question: str) -> str:
    answer = await llm.complete(question)
    return answer.text
