"""The workflow ``make demo`` runs when the blog example is not there: a small blog writer.

Research and an outline (short steps), then sections written two at a time, each streaming its
words, so a worker killed mid-section leaves completed steps behind to be replayed, not re-run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import outlast


@outlast.component
async def research(topic: str) -> list[str]:
    await asyncio.sleep(0.3)
    return [f"{topic} fails in production when a process dies", f"checkpoints let {topic} resume"]


@outlast.component
async def make_outline(topic: str, notes: list[str]) -> list[str]:
    await asyncio.sleep(0.3)
    return ["Why runs die", "Checkpoints", "Streams that resume", "What it costs"]


@outlast.component
async def write_section(heading: str, notes: list[str]) -> AsyncIterator[str]:
    words = f"{heading}: a durable step is written once and replayed from its checkpoint.".split()
    for word in words:
        await asyncio.sleep(0.15)
        yield word + " "


@outlast.workflow(name="blog-demo")
async def blog(topic: str) -> str:
    outlast.status("researching")
    notes = await research(topic)
    outline = await make_outline(topic, notes)
    outlast.status("writing")
    outlast.progress(0, len(outline), label="sections")
    parts = await outlast.gather(*(write_section(h, notes) for h in outline), limit=2)
    outlast.progress(len(parts), len(outline), label="sections")
    return "\n".join(parts)
