"""The blog workflow: research, outline, sections streamed concurrently, review, final edit.

* ``research`` — the model plans search queries (structured output), the library's index is
  read, the best-matching articles are fetched (``fetch_page`` steps) and kept as notes.
* ``make_outline`` — the model outlines the post (structured output: title, sections, points).
* ``write_section`` — one per section, up to :data:`SECTION_CONCURRENCY` at once: a streaming
  LLM call whose tokens go into the run stream as ``output`` frames of the step
  ``write_section#<i>/llm#0``. The ``draft`` object is published as each section completes.
* with ``review=True`` the run waits for an ``approve`` input (:class:`Approval`, with an
  optional note) before the edit, holding no worker while it waits.
* ``edit`` — the model writes the final title and standfirst, taking the reviewer's note.

Each part is a component with its own retry, timeout and fallback. The result, a :class:`Post`,
is also the ``draft`` object's last state.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable

from pydantic import BaseModel, Field

import outlast
from examples.blog.site import library_pages
from examples.common.providers import llm
from examples.common.web import BUILTIN_SITES, fetch_page

SECTION_CONCURRENCY = 3
SOURCES = 3
#: The library read when a run names none (``outlast dev``, ``make demo``): the fixture's pages
#: from memory, at a fixed address (see ``BUILTIN_SITES``).
BUILTIN_LIBRARY = "http://library.builtin/library/"
BUILTIN_SITES["library.builtin"] = library_pages


class Plan(BaseModel):
    queries: list[str] = Field(min_length=1, max_length=5, description="search queries for the library")


class Source(BaseModel):
    title: str
    url: str
    notes: str


class Research(BaseModel):
    queries: list[str]
    sources: list[Source]


class SectionPlan(BaseModel):
    heading: str
    points: list[str] = Field(min_length=1, max_length=4)


class Outline(BaseModel):
    title: str
    sections: list[SectionPlan] = Field(min_length=2, max_length=6)


class Approval(BaseModel):
    approved: bool = True
    note: str = Field("", description="what the final edit should change")


class Edit(BaseModel):
    title: str = Field(description="the post's final title")
    standfirst: str = Field(description="a one or two sentence introduction")


class Section(BaseModel):
    heading: str
    text: str | None = None  # None while it is being written


class Post(BaseModel):
    topic: str
    title: str
    standfirst: str = ""
    sections: list[Section]
    sources: list[str] = Field(default_factory=list)
    review_note: str = ""
    approved: bool = True


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3}


def _no_research(topic: str, library: str) -> Research:
    return Research(queries=[topic], sources=[])


@outlast.component(retry=outlast.Retry(attempts=2), timeout=120, fallback=_no_research)
async def research(topic: str, library: str) -> Research:
    """Plan queries with the model, then read the library articles that match them best."""
    outlast.status("planning research")
    plan = await llm().complete(
        [{"role": "system", "content": "You plan searches for a writer. Give 3 short search queries."},
         {"role": "user", "content": f"Research for a blog post about {topic}."}],
        response_model=Plan, max_tokens=300,
    )  # fmt: skip
    index = await fetch_page(library, library)
    if index.status != 200:
        return Research(queries=plan.queries, sources=[])
    wanted = _words(" ".join([topic, *plan.queries]))
    articles = [link for link in index.links if link.rstrip("/") != library.rstrip("/")]
    lines = dict(zip(articles, index.text.splitlines()[1:], strict=False))  # title lines, in order
    ranked = sorted(articles, key=lambda url: -len(wanted & _words(url + " " + lines.get(url, ""))))
    outlast.status(f"reading {SOURCES} of {len(articles)} library articles")
    pages = await outlast.gather(*(fetch_page(url, library) for url in ranked[:SOURCES]))
    sources = [Source(title=p.title, url=p.url, notes=p.text) for p in pages if p.status == 200]
    return Research(queries=plan.queries, sources=sources)


def _outline_prompt(topic: str, notes: Research) -> list[dict[str, str]]:
    sources = "\n\n".join(f"{s.title}\n{s.notes}" for s in notes.sources)
    return [
        {"role": "system", "content": "You outline blog posts: a title, then sections with key points."},
        {"role": "user", "content": f"Outline a blog post about {topic}.\n\nSources:\n{sources}"},
    ]


def _outline_from_sources(topic: str, notes: Research) -> Outline:
    """A model that cannot outline still gets a post: one section per source, then a wrap-up."""
    headings = [s.title.rsplit(" | ", 1)[0] for s in notes.sources][:4] or [f"Why {topic} matters"]
    sections = [SectionPlan(heading=h, points=[h]) for h in [*headings, "What to do next"]]
    return Outline(title=topic[:1].upper() + topic[1:], sections=sections)


@outlast.component(retry=outlast.Retry(attempts=3), timeout=120, fallback=_outline_from_sources)
async def make_outline(topic: str, notes: Research) -> Outline:
    outlast.status("outlining")
    return await llm().complete(_outline_prompt(topic, notes), response_model=Outline, max_tokens=800)


@outlast.component(retry=outlast.Retry(attempts=2), timeout=300)
async def write_section(topic: str, title: str, section: SectionPlan, notes: str) -> str:
    """One section, streamed: its tokens are output frames of this step's LLM call."""
    points = "\n".join(f"- {p}" for p in section.points)
    prompt = [
        {"role": "system", "content": "You write one section of a blog post, in plain prose."},
        {"role": "user", "content": f"Post: {title} (about {topic})\nSection: {section.heading}\n"
                                    f"Cover:\n{points}\n\nNotes:\n{notes}"},
    ]  # fmt: skip
    reply = await llm().stream(prompt, max_tokens=600)
    return reply.text


def _keep_title(title: str, sections: list[Section], note: str) -> Edit:
    return Edit(title=title, standfirst="")


@outlast.component(retry=outlast.Retry(attempts=3), timeout=120, fallback=_keep_title)
async def edit(title: str, sections: list[Section], note: str) -> Edit:
    """The final pass: title and standfirst, following the reviewer's note."""
    body = "\n\n".join(f"{s.heading}\n{s.text}" for s in sections)
    ask = f"Reviewer's request: {note}\n\n" if note else ""
    prompt = [
        {"role": "system", "content": "You are the editor: give the post its final title and a standfirst."},
        {"role": "user", "content": f"{ask}Draft title: {title}\n\n{body}"},
    ]
    return await llm().complete(prompt, response_model=Edit, max_tokens=400)


@outlast.workflow(name="blog")
async def blog(topic: str, library: str = BUILTIN_LIBRARY, review: bool = False, sections: int = 4) -> Post:
    """Write a blog post about ``topic`` from the ``library`` site (default: the built-in copy),
    streamed section by section."""
    notes = await research(topic, library)
    outline = await make_outline(topic, notes)
    plans = outline.sections[: max(1, sections)]
    draft = Post(topic=topic, title=outline.title, sections=[Section(heading=p.heading) for p in plans],
                 sources=[s.url for s in notes.sources])  # fmt: skip
    outlast.publish("draft", draft)
    outlast.status(f"writing {len(plans)} sections")
    joined_notes = "\n".join(s.notes for s in notes.sources)
    done = 0

    async def settle(i: int, call: Awaitable[str]) -> str:
        nonlocal done
        draft.sections[i].text = await call
        done += 1
        outlast.publish("draft", draft)
        outlast.progress(done, total=len(plans), label="sections")
        return draft.sections[i].text or ""

    calls = [write_section(topic, outline.title, p, joined_notes) for p in plans]  # positions fixed
    await outlast.gather(*(settle(i, c) for i, c in enumerate(calls)), limit=SECTION_CONCURRENCY)
    if review:
        outlast.status("waiting for review")
        approval = await outlast.wait_for_input(
            "approve", Approval, prompt="Approve the draft? Add a note for the final edit."
        )
        draft.review_note, draft.approved = approval.note, approval.approved
        if not approval.approved:
            outlast.status("rejected by the reviewer")
            outlast.publish("draft", draft)
            return draft
    outlast.status("editing")
    final = await edit(draft.title, draft.sections, draft.review_note)
    draft.title, draft.standfirst = final.title or draft.title, final.standfirst
    outlast.publish("draft", draft)
    outlast.status("done")
    return draft
