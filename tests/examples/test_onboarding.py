"""The onboarding example under load: 3 worker processes sharing an RPM limit, a provider outage,
429 bursts and a worker SIGKILLed mid-company; the simulator's and the fixture site's own request
logs say what was called and how often."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from typing import Any

import jsonpatch
import pytest
import redis.asyncio as aioredis

from examples.common.providers import SIM_ENV
from examples.common.sitehost import SiteHost
from examples.common.web import FetchedPage
from examples.onboarding.site import companies, site_pages
from examples.onboarding.workflow import PAGE_CONCURRENCY, onboarding
from outlast import events as ev
from outlast.control import Dispatcher
from outlast.llm.sim_knobs import OutageWindow, ThrottleWindow
from outlast.llm.simulator import SimulatorServer
from outlast.store.redis import RedisStore

from .conftest import SpawnWorker, WorkerProcess, events_of, owners

pytestmark = pytest.mark.timeout(240)

COMPANIES = 5  # ~48 LLM calls each
LIMIT, WINDOW = 40, 4.0  # requests per window, per provider, across every worker process
KILL_AFTER_PAGES = 6
_PAGE = re.compile(r"^Page: (\S+)", re.MULTILINE)


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in body["messages"] if m.get("role") == "user")


def answered_extractions(*sims: SimulatorServer) -> Counter[str]:
    """Page URL → extraction calls answered 200, over every simulator."""
    found: Counter[str] = Counter()
    for sim in sims:
        for request in sim.requests():
            match = _PAGE.search(user_text(request["body"]))
            if match and request["status"] == 200:
                found[match.group(1)] += 1
    return found


async def kill_mid_company(store: RedisStore, run_id: str, workers: list[WorkerProcess]) -> WorkerProcess:
    """SIGKILL the worker running the first company once it has read a few pages."""
    async for event in store.read_events(run_id, block_ms=200):
        if event.type == ev.CHILD_STARTED:
            child = event.data["child_run_id"]
            break
    done, owner = 0, ""
    async for event in store.read_events(child, block_ms=200):
        if event.type == ev.RUN_STARTED:
            owner = event.data["worker"]
        if event.type == ev.STEP_COMPLETED and event.data["name"] == "extract_facts":
            done += 1
            if done == KILL_AFTER_PAGES:
                break
    (victim,) = [w for w in workers if w.id == owner]
    victim.signal(signal.SIGKILL)
    await victim.wait()
    return victim


async def test_onboarding_batch_under_limits_outage_bursts_and_sigkill(
    spawn_worker: SpawnWorker, redis: aioredis.Redis, redis_url: str
) -> None:
    fixture = companies(COMPANIES)
    store, dispatcher = RedisStore(redis), Dispatcher(redis)
    with (
        SiteHost(site_pages(fixture)) as site,
        SimulatorServer(seed=1, request_log=10_000) as primary,
        SimulatorServer(seed=2, request_log=10_000) as fallback,
    ):
        env = {
            SIM_ENV: f"{primary.url},{fallback.url}",
            "OUTLAST_REDIS_URL": redis_url,  # the LLM limits are shared through it
            "OUTLAST_EXAMPLE_RPM": str(LIMIT),
            "OUTLAST_EXAMPLE_WINDOW": str(WINDOW),
            "OUTLAST_EXAMPLE_MAX_WAIT": "2",  # an outage's Retry-After spills over; a 1 s 429 waits
            # Grants are stamped when made, requests stamped by the simulator when it gets to them:
            # on 2 busy cores that can differ by more than the default 0.5 s.
            "OUTLAST_EXAMPLE_WINDOW_MARGIN": "1.5",
        }
        workers = [await spawn_worker(app="examples.onboarding", env=env, concurrency=20) for _ in range(3)]
        urls = [site.url + c.root for c in fixture]
        started = await dispatcher.start(onboarding, {"urls": urls})
        victim = await kill_mid_company(store, started.run_id, workers)
        # The LLM calls are flowing now. The limit lets requests through in bursts about a window
        # apart, so each spell is longer than that: 429s (each saying: retry in 1 s), then an
        # outage (503s saying: retry when it ends), which opens the primary's breaker for 10 s.
        now = time.time()
        primary.knobs.throttles = [ThrottleWindow(start=now, end=now + 6.5)]
        primary.knobs.outages = [OutageWindow(start=now + 8, end=now + 14.5)]
        profiles = await dispatcher.result(started.run_id, timeout=200)

        # Every profile is complete and says what the fixture site says.
        assert [p["url"] for p in profiles] == urls
        for company, profile in zip(fixture, profiles, strict=True):
            facts = company.facts
            assert profile["name"] == facts.name
            assert sorted(profile["products"]) == sorted(facts.products)
            assert sorted((p["name"], p["role"]) for p in profile["people"]) == sorted(facts.people)
            assert sorted((p["plan"], p["monthly_usd"]) for p in profile["pricing"]) == sorted(facts.pricing)
            assert sorted(profile["tech_stack"]) == sorted(facts.tech_stack)
            assert sorted(profile["locations"]) == sorted(facts.locations)
            assert profile["summary"]

        # The fleet kept to the limit in every window, as the providers themselves saw it.
        answered = [r for sim in (primary, fallback) for r in sim.requests() if r["status"] == 200]
        assert len(answered) >= 200
        assert primary.max_requests_in(WINDOW) <= LIMIT
        assert fallback.max_requests_in(WINDOW) <= LIMIT

        # The outage and the bursts happened, calls backed off and fell back.
        stats = primary.stats()
        assert stats["requests_by_status"].get("503", 0) > 0
        assert stats["throttled_requests"] > 0
        assert stats["rate_limited_requests"] == 0  # no 429 beyond the injected bursts
        assert fallback.stats()["requests_by_status"].get("200", 0) > 0

        parent = await events_of(store, started.run_id)
        started_children = [e.data["child_run_id"] for e in parent if e.type == ev.CHILD_STARTED]
        assert len(started_children) == COMPANIES
        # Children start concurrently, so their child.started events come in any order: pair each
        # with its company by the URL it was started with (its own run.queued event).
        by_url = {}
        for child_id in started_children:
            queued = (await events_of(store, child_id))[0]
            by_url[queued.data["input"]["url"]] = child_id
        children = [by_url[url] for url in urls]
        # Per kind of step ("fetch_page", "extract_facts"): the pages whose step the victim had
        # finished, and those it had started and not finished when it died.
        finished: dict[str, set[str]] = {"fetch_page": set(), "extract_facts": set()}
        tries: dict[str, int] = {}  # page URL → tries its fetch_page step took (a slow page: 2)
        in_flight: dict[str, set[str]] = {"fetch_page": set(), "extract_facts": set()}
        calls: list[dict[str, Any]] = []
        took_over = 0
        for company, child, profile in zip(fixture, children, profiles, strict=True):
            events = await events_of(store, child)
            ran = owners(events)
            killed = {attempt for attempt, worker in ran.items() if worker == victim.id}
            took_over += bool(killed) and max(ran) not in killed
            page_of: dict[str | None, tuple[str, str]] = {}
            for e in events:
                if e.type == ev.STEP_STARTED and e.data["name"] in finished:
                    args = e.data["args"]
                    page_of[e.step] = (e.data["name"], args["url"] if "url" in args else args["page"]["url"])
                    if e.attempt in killed:
                        in_flight[e.data["name"]].add(page_of[e.step][1])
                if e.type == ev.STEP_COMPLETED and e.step in page_of and e.attempt in killed:
                    kind, url = page_of[e.step]
                    finished[kind].add(url)
                if e.type == ev.STEP_COMPLETED and e.data["name"] == "llm":
                    calls.append(e.data["result"])
                if e.type == ev.STEP_COMPLETED and e.data["name"] == "fetch_page":
                    page = FetchedPage.model_validate(e.data["result"])
                    tries[page.url] = e.data["tries"]
                    path = page.url.removeprefix(site.url)
                    expected = 0 if path == company.slow else 404 if path in company.missing else 200
                    assert page.status == expected, page
            # The live profile: its patches, applied in order, end as the result.
            state: Any = None
            for e in events:
                if e.type == ev.OBJECT and e.data["name"] == "profile":
                    state = jsonpatch.apply_patch(state, e.data["patch"])
            assert state == profile
        for kind in finished:
            in_flight[kind] -= finished[kind]
            assert len(in_flight[kind]) <= PAGE_CONCURRENCY * COMPANIES
        assert took_over >= 1
        assert len(finished["extract_facts"]) >= KILL_AFTER_PAGES

        # Nothing the victim finished was fetched or summarised again; only what it had in flight
        # when it died may have been asked twice.
        fetched = site.fetch_counts()
        for company in fixture:
            for path in [*company.pages, *company.missing]:
                url = site.url + path
                cut_short = 2 if url in in_flight["fetch_page"] else 0  # the tries the victim made
                # (a try can fail before its request reaches the site, so fetches <= tries)
                assert 1 <= fetched[path] <= tries[url] + cut_short, (path, fetched[path])
                if url in finished["fetch_page"]:
                    assert fetched[path] <= tries[url], path
            assert tries[site.url + company.slow] == 2  # the slow page timed out on both tries
        extracted = answered_extractions(primary, fallback)
        assert len(extracted) >= 40 * COMPANIES
        for url, count in extracted.items():
            assert count <= (2 if url in in_flight["extract_facts"] else 1), (url, count)
            if url in finished["extract_facts"]:
                assert count == 1, url

        # Calls that met a 429 backed off for its Retry-After before trying again, and still
        # completed (on the primary once the spell ended, or on the second provider).
        throttled = [c for c in calls if any(e["status"] == 429 for e in c["errors"])]
        assert throttled
        assert all(c["latency"] >= 1.0 for c in throttled)
        # Calls fell back: served by the second provider after the first failed them.
        assert any(c["provider"] == "sim-anthropic" and c["errors"] for c in calls)
