"""The onboarding workflows: ``onboarding_company`` enriches one company; ``onboarding`` a batch.

``onboarding_company(url)`` crawls the site breadth first. Each page is one ``read_page`` step:
fetch it (a nested ``fetch_page`` step with retry/timeout/fallback) and, when it has text, one
LLM call that extracts :class:`PageFacts`. Up to :data:`PAGE_CONCURRENCY` pages of a level are in
flight at once (``outlast.gather(limit=...)``). As each page ends the workflow merges its facts
into the ``profile`` object and publishes it, with ``progress`` (pages done / pages found), so
a UI sees the profile fill in while the crawl goes on. Finally one LLM call merges every page's
facts into the :class:`Profile`, which is published and returned.

``onboarding(urls)`` starts one child run per company and waits for them all; the parent holds
no worker while it waits. Why child runs here and ``gather`` inside a company: see
``examples/README.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable

from pydantic import BaseModel, Field

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


class PageResult(BaseModel):
    """One page read: what the crawl needs next (links) and what the page said (facts)."""

    url: str
    status: int
    title: str = ""
    links: list[str] = Field(default_factory=list)
    facts: PageFacts | None = None  # None: no text to read, or the model could not be reached
    error: str = ""


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
async def read_page(url: str, root: str) -> PageResult:
    """Fetch one page and extract its facts (one LLM call when it has text)."""
    page = await fetch_page(url, root)
    result = PageResult(url=url, status=page.status, title=page.title, links=page.links, error=page.error)
    if page.status != 200 or not page.text:
        return result
    try:
        result.facts = await llm().complete(page_prompt(page), response_model=PageFacts, max_tokens=800)
    except LLMError as exc:  # every provider failed for good: the page is skipped, the crawl goes on
        result.error = f"extraction failed: {exc}"
    return result


def _draft(url: str, name: str, facts: PageFacts) -> dict[str, object]:
    return {"name": name, "url": url, "summary": "", **facts.model_dump(mode="json")}


@outlast.workflow(name="onboarding_company")
async def onboarding_company(url: str, max_pages: int = MAX_PAGES) -> Profile:
    """Crawl one company's site and build its profile; the ``profile`` object fills in live."""
    root = url if url.endswith("/") else f"{url}/"
    seen, frontier = [url], [url]
    results: list[PageResult] = []
    draft, name, done = PageFacts(), "", 0
    outlast.status(f"crawling {url}")

    async def settle(call: Awaitable[PageResult]) -> PageResult:
        nonlocal done
        result = await call
        done += 1
        if result.facts is not None and not result.facts.empty():
            merge(draft, result.facts)
            outlast.publish("profile", _draft(url, name, draft))
        outlast.progress(done, total=len(seen), label="pages")
        return result

    while frontier:
        calls = [read_page(link, root) for link in frontier]  # step positions fixed in crawl order
        level = await outlast.gather(*(settle(call) for call in calls), limit=PAGE_CONCURRENCY)
        results += level
        if not name and level[0].title:
            name = level[0].title.rsplit(" | ", 1)[-1]
        frontier = []
        for result in level:
            for link in result.links:
                if link not in seen and len(seen) < max_pages:
                    seen.append(link)
                    frontier.append(link)
        if frontier:
            outlast.status(f"{done} pages read, {len(frontier)} more found")
    failed = [r.url for r in results if r.status != 200]
    outlast.status(f"merging what {done - len(failed)} pages say ({len(failed)} could not be read)")
    facts = [r.facts for r in results if r.facts is not None and not r.facts.empty()]
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
