"""The blog example's fixture: a small reference library (an index and a dozen articles).

The research step reads ``/library/`` (titles and abstracts with links), picks the articles that
match the model's queries, and reads them. The articles are fixed text, so tests know them.
"""

from __future__ import annotations

import functools
import html

from examples.common.sitehost import Page

ARTICLES: tuple[tuple[str, str, str], ...] = (
    ("durable-execution", "Durable execution in plain words",
     "A durable workflow records each finished step, so a crash costs only the step in flight. "
     "Replaying the record brings a new process to the same point without redoing paid work."),
    ("retries-and-idempotency", "Retries need idempotent steps",
     "A retry repeats a request that may already have had an effect. Steps that can run twice "
     "without harm, or that check before acting, make retries safe."),
    ("rate-limits", "Living with rate limits",
     "Providers cap requests and tokens per minute. A fleet that shares one budget, waits for "
     "capacity and spills over to a second provider keeps throughput near the limit."),
    ("streaming-to-readers", "Streaming text to readers who refresh",
     "Readers leave and come back. Numbered events let a page resume from the last one it saw, "
     "so nothing is lost or shown twice after a refresh."),
    ("human-review", "Human review in automated pipelines",
     "Some steps need a person: an approval, a correction, a note. A workflow that waits without "
     "holding a worker can wait for days at no cost."),
    ("agents-and-tools", "Agents, tools and long-running tasks",
     "An agent that plans, calls tools and writes can run for minutes. Each tool call is a step "
     "worth checkpointing, because repeating it costs money and time."),
    ("checkpoints", "What a checkpoint should hold",
     "A checkpoint holds a step's result, not the process's memory. Results in JSON survive "
     "deploys and new versions of the code that reads them."),
    ("fallbacks", "Fallbacks that keep a product working",
     "When a provider is down, a second model or a cached answer keeps the product useful. "
     "Circuit breakers stop sending traffic to a provider that keeps failing."),
    ("observability", "Seeing inside a running workflow",
     "Status lines, progress and live objects let a user see work happen. A trace of steps, "
     "retries and waits explains where the time went."),
    ("deploys", "Deploying without dropping work",
     "A deploy should drain running work or hand it over. Pinning each run to the version it "
     "started on avoids replaying old records with new code."),
    ("cost-control", "Keeping model costs under control",
     "Tokens cost money. Caching finished calls, capping tokens per run and replaying recorded "
     "answers after a crash keep the bill predictable."),
    ("writing-with-models", "Writing long documents with language models",
     "Outline first, then write sections in parallel and edit at the end. Streaming each section "
     "as it is written keeps the reader engaged."),
)  # fmt: skip


def _page(title: str, body: str) -> Page:
    return Page(
        f"<!doctype html><html><head><title>{html.escape(title)} | Library</title></head><body>"
        "<nav><a href='/library/'>Library</a></nav><main>"
        f"<h1>{html.escape(title)}</h1>{body}</main><footer>Reference library</footer></body></html>"
    )


@functools.cache
def library_pages() -> dict[str, Page]:
    items = "".join(  # one line of text per article: its title, then its first sentence
        f"<li><a href='/library/{slug}'>{html.escape(title)}</a>: {html.escape(text.split('. ')[0])}.</li>"
        for slug, title, text in ARTICLES
    )
    pages = {"/library/": _page("Library", f"<ul>{items}</ul>")}
    for slug, title, text in ARTICLES:
        sentences = [s.strip().rstrip(".") for s in text.split(". ")]
        paragraphs = "".join(f"<p>{html.escape(s)}.</p>" for s in sentences if s)
        pages[f"/library/{slug}"] = _page(title, paragraphs)
    return pages
