"""The onboarding workflows: ``onboarding_company`` enriches one company; ``onboarding`` a batch.

``onboarding_company(url)`` crawls the site breadth first, one ``fetch_page`` step per page
(retry, timeout, fallback), and reads every page that has text with one ``extract_facts`` step:
an LLM call that returns :class:`PageFacts`. A level's pages are read while the next level is
fetched, so the LLM calls never wait for a crawl level to finish (the fleet uses all the rate
limit it has). Up to :data:`PAGE_CONCURRENCY` fetches and as many LLM calls of a company are in
flight at once. As each page is read the workflow merges its facts into the
``profile`` object and publishes it, with ``progress`` (pages read / readable), so a UI sees the
profile fill in while the run goes on. Finally one LLM call merges every page's facts into the
:class:`Profile`, which is published and returned.

``onboarding(urls)`` starts one child run per company and waits for them all; the parent holds
no worker while it waits. Why child runs here and ``gather`` inside a company: see
``examples/README.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import outlast
from examples.common.providers import llm
from examples.common.web import FetchedPage, fetch_page
from examples.onboarding.models import PageFacts, Profile, merge
from outlast.llm import LLMError

PAGE_CONCURRENCY = 8
MAX_PAGES = 60

EXTRACT = (
    "You read one page of a company's website and extract facts about the company: its products, "
    "its people and their roles, its price plans (USD per month), its tech stack and the cities "
    "where it has offices. Report only what this page states; leave the rest empty."
)
MERGE = (
    "You merge the facts gathered from many pages of a company's website into one profile. Keep "
    "every distinct product, person, plan, technology and location once, and write a one-sentence "
    "summary of what the company does."
)


def page_prompt(page: FetchedPage) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": EXTRACT},
        {"role": "user", "content": f"Page: {page.url}\nTitle: {page.title}\n\n{page.text}"},
    ]


def merge_prompt(url: str, name: str, facts: list[PageFacts]) -> list[dict[str, str]]:
    lines = [f"Name: {name}", f"Url: {url}"]
    for item in facts:
        if item.products:
            lines.append(f"Products: {'; '.join(item.products)}")
        if item.people:
            lines.append("People: " + "; ".join(f"{p.name} ({p.role})" for p in item.people))
        if item.pricing:
            lines.append(
                "Pricing: " + "; ".join(f"{p.plan} (${p.monthly_usd or 0:g}/month)" for p in item.pricing)
            )
        if item.tech_stack:
            lines.append(f"Tech stack: {'; '.join(item.tech_stack)}")
        if item.locations:
            lines.append(f"Locations: {'; '.join(item.locations)}")
    return [{"role": "system", "content": MERGE}, {"role": "user", "content": "\n".join(lines)}]


@outlast.component
async def extract_facts(page: FetchedPage) -> PageFacts | None:
    """One LLM call: the facts the page states (None if every provider failed for good)."""
    try:
        return await llm().complete(page_prompt(page), response_model=PageFacts, max_tokens=800)
    except LLMError as exc:  # the page is skipped, the profile is built from the others
        outlast.log(f"could not read {page.url}: {exc}", level="warning")
        return None


def _draft(url: str, name: str, facts: PageFacts) -> dict[str, object]:
    return {"name": name, "url": url, "summary": "", **facts.model_dump(mode="json")}


@outlast.workflow(name="onboarding_company")
async def onboarding_company(url: str, max_pages: int = MAX_PAGES) -> Profile:
    """Crawl one company's site and build its profile; the ``profile`` object fills in live."""
    root = url if url.endswith("/") else f"{url}/"
    outlast.status(f"crawling {url}")
    seen, frontier = [url], [url]
    pages: list[FetchedPage] = []
    readers: list[asyncio.Future[PageFacts | None]] = []
    slots = asyncio.Semaphore(PAGE_CONCURRENCY)  # this company's LLM calls in flight
    draft, name, done = PageFacts(), url, 0

    async def read(call: Awaitable[PageFacts | None]) -> PageFacts | None:
        nonlocal done
        async with slots:
            facts = await call
        done += 1
        if facts is not None and not facts.empty():
            merge(draft, facts)
            outlast.publish("profile", _draft(url, name, draft))
        outlast.progress(done, total=len(readers), label="pages read")
        return facts

    while frontier:
        level = await outlast.gather(*(fetch_page(link, root) for link in frontier), limit=PAGE_CONCURRENCY)
        pages += level
        if len(pages) == len(level) and level[0].title:  # the start page names the company
            name = level[0].title.rsplit(" | ", 1)[-1]
        # Read this level's pages while the next level is fetched. The calls are made here, in
        # crawl order, so their step positions are the same on every replay.
        readable = [page for page in level if page.status == 200 and page.text]
        readers += [asyncio.ensure_future(read(extract_facts(page))) for page in readable]
        frontier = []
        for page in level:
            for link in page.links:
                if link not in seen and len(seen) < max_pages:
                    seen.append(link)
                    frontier.append(link)
        if frontier:
            outlast.status(f"{len(pages)} pages fetched, {len(frontier)} more found")
    outlast.status(f"reading {len(readers)} pages ({len(pages) - len(readers)} could not be fetched)")
    found = await outlast.gather(*readers)
    facts = [f for f in found if f is not None and not f.empty()]
    outlast.status(f"merging what {len(facts)} pages say")
    profile = await llm().complete(merge_prompt(url, name, facts), response_model=Profile, max_tokens=2000)
    outlast.publish("profile", profile)
    return profile


@outlast.workflow(name="onboarding")
async def onboarding(urls: list[str]) -> list[Profile]:
    """Enrich a batch of companies: one child run each, all at once."""
    outlast.status(f"enriching {len(urls)} companies")
    done = 0

    async def settle(call: Awaitable[Profile]) -> Profile:
        nonlocal done
        profile = await call
        done += 1
        outlast.progress(done, total=len(urls), label="companies")
        outlast.status(f"{profile.name}: {len(profile.products)} products, {len(profile.people)} people")
        return profile

    children = [outlast.run_child(onboarding_company, {"url": url}) for url in urls]
    return await outlast.gather(*(settle(child) for child in children))
