"""Golden logs: docs/protocol.md's worked examples (§16), replayed against the code.

``tests/fixtures/protocol/*.jsonl`` hold the event logs of the doc's two-step run, as
``outlast events --no-follow`` prints them with ``v``, ``run_id`` and ``ts`` left out. Each test
runs the doc's workflow on both stores and compares every event (seq, type, attempt, step and
data) with the fixture; a second test checks the doc's code blocks still show the fixtures. A
change to the protocol must therefore change the fixture and the doc together.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import outlast
from outlast import events as ev
from outlast.store.base import RunStore
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "protocol"
RETENTION = 7 * 24 * 3600  # the Runner's default: the doc shows a TTL of 604800 s


def golden(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [normalised(json.loads(line)) for line in lines if line.strip()]


def normalised(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs from run to run (``v`` is checked, then dropped)."""
    event = {k: v for k, v in event.items() if k not in ("v", "run_id", "ts")}
    data = dict(event["data"])
    if "duration" in data:
        assert isinstance(data["duration"], float)
        assert data["duration"] >= 0
        data["duration"] = "<seconds>"
    return {**event, "data": data}


async def logged(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    events = [e async for e in store.read_events(run_id, follow=False)]
    assert {(e.v, e.run_id) for e in events} == {(ev.SCHEMA_VERSION, run_id)}
    return [normalised(e.model_dump()) for e in events]


class Blog:
    """The doc's workflow. ``write`` streams three chunks, 50 ms apart (each its own frame: the
    writer closes a frame 30 ms after its first chunk). ``hang`` makes the first call of
    ``write`` stop after "durable " until released, as a killed process would."""

    CHUNKS = ("Hello ", "durable ", "world.")

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.writes = 0
        self.released = asyncio.Event()

        @outlast.component
        async def outline(topic: str) -> list[str]:
            return ["Intro", "Body"]

        @outlast.component
        async def write(heading: str) -> AsyncIterator[str]:
            self.writes += 1
            first = self.writes == 1
            for chunk in self.CHUNKS:
                yield chunk
                if self.hang and first and chunk == "durable ":
                    await self.released.wait()
                await asyncio.sleep(0.05)

        @outlast.workflow
        async def post(topic: str) -> str:
            outlast.status("planning")
            heads = await outline(topic)  # outline#0
            text: str = await write(heads[0])  # type: ignore[assignment]  # write#1, streamed
            outlast.publish("doc", {"title": topic, "words": len(text.split())})
            return text

        self.post = post


async def test_the_two_step_run_writes_the_documented_log(any_store: RunStore) -> None:
    blog = Blog()
    runner = outlast.Runner(any_store, worker_id="w1")
    run_id = await runner.start(blog.post, {"topic": "t"}, run_id="run-a")
    outcome = await runner.execute(blog.post, run_id)
    assert (outcome.status, outcome.result) == ("completed", "Hello durable world.")
    assert await logged(any_store, run_id) == golden("two_step_run.jsonl")
    # "the steps hash holds 0, 1 (checkpoints) and e::0, e::1 (the status and the object)"
    assert sorted(await any_store.load_steps(run_id)) == ["0", "1", "e::0", "e::1"]
    if isinstance(any_store, RedisStore):  # "All its keys (four here) have a TTL of 604800 s"
        ttls = {key: await any_store.redis.ttl(key) for key in run_keys(run_id).all()}
        present = {key: ttl for key, ttl in ttls.items() if ttl != -2}
        assert len(present) == 4
        assert all(RETENTION - 5 <= ttl <= RETENTION for ttl in present.values()), ttls


async def test_the_resumed_run_writes_the_documented_log(any_store: RunStore) -> None:
    blog = Blog(hang=True)
    runner = outlast.Runner(any_store, worker_id="w1")
    run_id = await runner.start(blog.post, {"topic": "t"}, run_id="run-a")
    first = asyncio.create_task(runner.execute(blog.post, run_id))
    async for event in any_store.read_events(run_id, block_ms=200):
        if event.seq == 8:  # "killed after seq 8 was stored"
            break
    # A second attempt takes the fence; the first, hanging as a killed process would, is fenced
    # off when it wakes: nothing it writes afterwards reaches the log.
    outcome = await runner.execute(blog.post, run_id)
    assert (outcome.status, outcome.attempt, outcome.result) == ("completed", 2, "Hello durable world.")
    blog.released.set()
    stale = await asyncio.wait_for(first, 10)
    assert stale.status == "abandoned"
    assert await logged(any_store, run_id) == golden("two_step_run_resumed.jsonl")


def documented_logs() -> list[list[str]]:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## 16. Worked examples") :]
    section = section[: section.index("\n## ", 1)]
    return [block.splitlines() for block in re.findall(r"```json\n(.*?)```", section, re.S)]


@pytest.mark.parametrize(("block", "fixture"), [(0, "two_step_run.jsonl"), (1, "two_step_run_resumed.jsonl")])
def test_the_doc_shows_the_golden_logs(block: int, fixture: str) -> None:
    shown = [json.loads(line) for line in documented_logs()[block]]
    expected = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    # The resumed run's block shows only seqs 7 on (seqs 1-6 are those of the first log).
    assert shown == expected[-len(shown) :]
    assert len(shown) >= 10
