"""The blog example in worker processes: sections stream, a SIGKILL mid-section loses nothing and
repeats no research or outline, the review waits without a worker and resumes on input."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import jsonpatch
import pytest
import redis.asyncio as aioredis

from examples.blog.site import library_pages
from examples.blog.workflow import blog
from examples.common.providers import SIM_ENV
from examples.common.sitehost import SiteHost
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.llm.simulator import SimulatorServer
from outlast.store.redis import RedisStore

from .conftest import SpawnWorker, events_of, owners

pytestmark = pytest.mark.timeout(120)

TOPIC = "durable workflows for AI agents"
NOTE = "lead with the crash story"


def answered(sims: tuple[SimulatorServer, ...], marker: str) -> int:
    """Calls answered 200 whose user message contains ``marker``."""
    return sum(
        1
        for sim in sims
        for r in sim.requests()
        if r["status"] == 200 and any(marker in str(m.get("content")) for m in r["body"]["messages"])
    )


def streamed_sections(events: list[ev.Event]) -> dict[str, str]:
    """Heading → the section's text as a reader joins it from the stream: the output frames of the
    section's LLM step, keeping only the last (attempt, try) that streamed it (docs/protocol.md §6)."""
    heading = {e.step: e.data["args"]["section"]["heading"] for e in events
               if e.type == ev.STEP_STARTED and e.data["name"] == "write_section"}  # fmt: skip
    text: dict[str, str] = {}
    seen: dict[str, tuple[int, int]] = {}
    for e in events:
        if e.type != ev.OUTPUT or e.step is None or e.step.split("/")[0] not in heading:
            continue
        name, mark = heading[e.step.split("/")[0]], (e.attempt, e.data["try"])
        if seen.get(name) != mark:
            seen[name], text[name] = mark, ""
        text[name] += e.data["text"]
    return text


async def test_blog_streams_survives_sigkill_and_waits_for_review(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, redis_url: str
) -> None:
    store, dispatcher = RedisStore(redis), Dispatcher(redis)
    knobs: dict[str, Any] = {
        "request_log": 1000,
        "ttft_ms": 50.0,
        "tokens_per_second": 15.0,
    }  # seconds a section
    with (
        SiteHost(library_pages()) as site,
        SimulatorServer(seed=1, **knobs) as primary,
        SimulatorServer(seed=2, **knobs) as fallback,
    ):
        env = {SIM_ENV: f"{primary.url},{fallback.url}", "OUTLAST_REDIS_URL": redis_url}
        workers = [await spawn_worker(app="examples.blog", env=env, concurrency=20) for _ in range(2)]
        library = f"{site.url}/library/"
        run_id = (await dispatcher.start(blog, {"topic": TOPIC, "library": library, "review": True})).run_id

        # SIGKILL the run's worker while its sections are streaming.
        owner = ""
        async for event in store.read_events(run_id, block_ms=200):
            if event.type == ev.RUN_STARTED:
                owner = event.data["worker"]
            if event.type == ev.OUTPUT and "/llm#" in (event.step or ""):
                break
        (victim,) = [w for w in workers if w.id == owner]
        victim.signal(signal.SIGKILL)
        await victim.wait()

        # The survivor takes over, finishes the sections and the run waits for review, holding no worker.
        async for event in store.read_events(run_id, block_ms=200):
            if event.type == ev.RUN_WAITING:
                break
        record = await store.get_run(run_id)
        assert (record.status, record.lease_owner) == ("waiting", "")
        waiting = await events_of(store, run_id)
        requested = [e for e in waiting if e.type == ev.INPUT_REQUESTED]
        assert [e.data["key"] for e in requested] == ["approve"]
        assert not [e for e in waiting if e.type in ev.TERMINAL_TYPES]

        assert await dispatcher.supply_input(run_id, "approve", {"approved": True, "note": NOTE}) == "resumed"
        post = await dispatcher.result(run_id, timeout=60)

    events = await events_of(store, run_id)
    ran = owners(events)
    assert ran[min(ran)] == victim.id
    assert ran[max(ran)] != victim.id

    # Research and outline ran once, in the first attempt: never again after the kill.
    started = [(e.data["name"], e.attempt) for e in events if e.type == ev.STEP_STARTED]
    assert [a for name, a in started if name in ("research", "make_outline")] == [1, 1]
    assert answered((primary, fallback), "Research for a blog post about") == 1
    assert answered((primary, fallback), "Outline a blog post about") == 1
    assert site.fetch_counts()["/library/"] == 1

    # A section was cut by the kill and streamed again; what a reader joins equals the result.
    sections = {s["heading"]: s["text"] for s in post["sections"]}
    assert streamed_sections(events) == sections
    restreamed = Counter(e.step for e in events if e.type == ev.STEP_STARTED and e.data["name"] == "llm"
                         and e.attempt > 1 and "write_section" in (e.step or ""))  # fmt: skip
    assert restreamed, "no section was in flight at the kill"

    # The draft object's last state is the result; the edit pass used the reviewer's note.
    draft: Any = None
    for e in events:
        if e.type == ev.OBJECT and e.data["name"] == "draft":
            draft = jsonpatch.apply_patch(draft, e.data["patch"])
    assert draft == post
    assert post["review_note"] == NOTE
    assert post["approved"]
    assert answered((primary, fallback), f"Reviewer's request: {NOTE}") == 1
    assert post["title"]
    assert post["standfirst"]
    assert len(post["sections"]) >= 2
    assert post["sources"]
    assert all(url.startswith(library) for url in post["sources"])


async def test_a_run_without_a_library_reads_the_built_in_copy() -> None:
    """``outlast dev`` and ``make demo`` start ``{"topic": ...}`` alone: the library then comes from
    memory at a fixed address, the same URLs on every worker that replays the run."""
    from examples.blog.workflow import BUILTIN_LIBRARY
    from examples.common.web import fetch_page

    assert "library" not in blog.input_model.model_json_schema().get("required", [])
    index = await fetch_page(BUILTIN_LIBRARY, BUILTIN_LIBRARY)
    slugs = {path.rsplit("/", 1)[1] for path in library_pages() if path != "/library/"}
    assert index.status == 200
    assert {link.rsplit("/", 1)[1] for link in index.links if link != BUILTIN_LIBRARY} == slugs
    article = await fetch_page(index.links[-1], BUILTIN_LIBRARY)
    assert (article.status, article.url) == (200, index.links[-1])
    assert article.text
    missing = await fetch_page(BUILTIN_LIBRARY + "nope", BUILTIN_LIBRARY)
    assert missing.status == 404
