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
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

import outlast
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store.base import RunStore
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore
from outlast.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "protocol"
RETENTION = 7 * 24 * 3600  # the Runner's default: the doc shows a TTL of 604800 s


def golden(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [normalised(json.loads(line)) for line in lines if line.strip()]


def normalised(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs from run to run: ``v`` (checked by the caller), ``run_id``,
    ``ts``, and durations and clock times in ``data`` (checked to be numbers)."""
    event = {k: v for k, v in event.items() if k not in ("v", "run_id", "ts")}
    return {**event, "data": scrubbed(event["data"])}


VOLATILE = {"duration": "<seconds>", "deadline": "<time>", "until": "<time>"}


def scrubbed(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in VOLATILE:
                assert isinstance(item, float), (key, item)
                assert item >= 0
                item = VOLATILE[key]
            out[key] = scrubbed(item)
        return out
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value


async def logged(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    events = [e async for e in store.read_events(run_id, follow=False)]
    assert {(e.v, e.run_id) for e in events} == {(ev.SCHEMA_VERSION, run_id)}
    return [normalised(e.model_dump()) for e in events]


async def stored(store: RunStore, run_id: str, wanted: Callable[[ev.Event], bool]) -> None:
    """Return once an event ``wanted`` is in the run's log (the run goes on meanwhile)."""
    async for event in store.read_events(run_id, block_ms=200):
        if wanted(event):
            return
    raise AssertionError(f"run {run_id} ended without the event awaited")


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
    try:
        await asyncio.wait_for(stored(any_store, run_id, lambda e: e.seq == 8), 10)  # "killed after seq 8"
        # A second attempt takes the fence; the first, hanging as a killed process would, is
        # fenced off when it wakes: nothing it writes afterwards reaches the log.
        outcome = await runner.execute(blog.post, run_id)
        assert (outcome.status, outcome.attempt, outcome.result) == ("completed", 2, "Hello durable world.")
    finally:
        blog.released.set()
    stale = await asyncio.wait_for(first, 10)
    assert stale.status == "abandoned"
    assert await logged(any_store, run_id) == golden("two_step_run_resumed.jsonl")


def documented_logs() -> list[list[str]]:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## 16. Worked examples") :]
    section = section[: section.index("\n## ", 1)]
    return [block.splitlines() for block in re.findall(r"```json\n(.*?)```", section, re.S)]


@pytest.mark.parametrize(
    ("block", "fixture"),
    [(0, "two_step_run.jsonl"), (1, "two_step_run_resumed.jsonl"), (2, "waiting_run.jsonl")],
)
def test_the_doc_shows_the_golden_logs(block: int, fixture: str) -> None:
    # The doc shortens a JSON Schema to {…}; the resumed and the waiting runs' blocks show only
    # their later seqs.
    shown = [json.loads(line.replace("{…}", '"…"')) for line in documented_logs()[block]]
    expected = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    for event in expected:
        if "schema" in event["data"]:
            event["data"]["schema"] = "…"
    assert shown == expected[-len(shown) :]
    assert len(shown) >= 10


# -- the waiting run (§16's third example): the README's publish_post on one worker --------------


class Review(BaseModel):
    ok: bool
    note: str = ""


@outlast.component
async def write_draft(topic: str) -> str:
    return f"A post about {topic}"


@outlast.workflow
async def send_newsletter(post: str) -> int:
    return len(post)  # readers reached, say


@outlast.workflow
async def publish_post(topic: str) -> str:
    draft = await write_draft(topic)
    review = await outlast.wait_for_input(
        "approve", Review, timeout=timedelta(days=2), prompt="Approve the draft?"
    )
    if not review.ok:
        return f"rejected: {review.note}"
    await outlast.sleep(3)  # the doc's run: a 3-second sleep (the README sleeps an hour)
    reached = await outlast.run_child(send_newsletter, {"post": draft})
    return f"published, {reached} readers"


async def test_the_waiting_run_writes_the_documented_log(redis: aioredis.Redis) -> None:
    worker = Worker([publish_post, send_newsletter], redis, worker_id="w1", version="dev")
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    try:
        dispatcher = Dispatcher(redis)
        run_id = (await dispatcher.start(publish_post, {"topic": "t"}, run_id="run-b", version="dev")).run_id
        await asyncio.wait_for(stored(dispatcher.store, run_id, lambda e: e.type == ev.RUN_WAITING), 20)
        assert await dispatcher.supply_input(run_id, "approve", {"ok": True}) == "resumed"
        assert await dispatcher.result(run_id, timeout=30) == "published, 14 readers"
    finally:
        worker.stop()
        await task
    record = await dispatcher.store.get_run(run_id)
    assert (record.attempt, record.resumes) == (3, 2)  # "used 3 attempts and has resumes = 2"
    steps = await dispatcher.store.load_steps(run_id)
    assert {position: json.loads(raw)["result"] for position, raw in steps.items()} == {
        "0": "A post about t",
        "1": {"value": {"ok": True}},
        "2": None,
        "3": {"run_id": "run-b.c3"},
        "4": {"run_id": "run-b.c3", "status": "completed", "result": 14, "error": None},
    }
    assert await logged(dispatcher.store, run_id) == golden("waiting_run.jsonl")
