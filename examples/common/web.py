"""Fetching and reading one page: a durable component with retry, timeout and fallback.

A 404 comes back as a page with ``status=404`` (handled, not retried); a 5xx or a connection
error is retried; a page slower than :data:`FETCH_TIMEOUT` per try ends, after the retries, in
the fallback: a page with ``status=0`` and the error. Nothing here fails the crawl.

The HTML is read with selectolax (a real HTML5 parser): the title, the text of the ``<main>``
element's blocks (headings, paragraphs, list items — navigation, cookie banners, sidebars,
footers, scripts and styles are left out) one per line, and the links that stay inside the
crawled site.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
from pydantic import BaseModel, Field
from selectolax.lexbor import LexborHTMLParser

import outlast
from examples.common.sitehost import Page

FETCH_TIMEOUT = 2.0  # seconds per try
MAX_TEXT = 6_000  # characters of page text sent to the model
_BLOCKS = "h1, h2, h3, h4, p, li, dt, dd, td, blockquote"
_SKIP = "script, style, noscript, nav, header, footer, aside, form, .cookie-banner"


#: Sites read from memory instead of the network, by host name: a run started without a site of
#: its own (``outlast dev``, ``make demo``) reads an example's built-in copy. The host name is
#: fixed, so the URLs recorded in a run's steps are the same on whichever worker replays it.
BUILTIN_SITES: dict[str, Callable[[], Mapping[str, Page]]] = {}


class FetchedPage(BaseModel):
    url: str
    status: int = Field(description="HTTP status; 0 when the page could not be fetched")
    title: str = ""
    text: str = ""
    links: list[str] = Field(default_factory=list)
    error: str = ""


def read_html(url: str, root: str, markup: str) -> FetchedPage:
    """Title, main text and in-site links of one HTML page."""
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else ""
    links: list[str] = []
    for anchor in tree.css("a[href]"):
        href = urldefrag(urljoin(url, anchor.attributes.get("href") or ""))[0]
        if href.startswith(root) and href not in links:
            links.append(href)
    body = tree.css_first("main") or tree.body
    lines: list[str] = []
    if body is not None:
        for node in body.css(_SKIP):
            node.decompose()
        for block in body.css(_BLOCKS):
            text = " ".join(block.text(deep=True).split())
            if text:
                lines.append(text)
    return FetchedPage(url=url, status=200, title=title, text="\n".join(lines)[:MAX_TEXT], links=links)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _http() -> httpx.AsyncClient:
    """This event loop's HTTP client (one connection pool per worker process, not one per page)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(
            timeout=FETCH_TIMEOUT, follow_redirects=True,
            headers={"user-agent": "outlast-examples/0.1"},
        )  # fmt: skip
    return client


class RetryableStatus(Exception):
    """A 5xx: worth another try."""


def _unreachable(url: str, root: str) -> FetchedPage:
    return FetchedPage(url=url, status=0, error=f"no answer within {FETCH_TIMEOUT}s after retries")


@outlast.component(
    retry=outlast.Retry(attempts=2, backoff_base=0.1), timeout=FETCH_TIMEOUT, fallback=_unreachable
)
async def fetch_page(url: str, root: str) -> FetchedPage:
    """GET ``url`` and read it; links outside ``root`` are dropped."""
    split = urlsplit(url)
    if split.hostname in BUILTIN_SITES:
        page = BUILTIN_SITES[split.hostname]().get(split.path)
        if page is None:
            return FetchedPage(url=url, status=404, error="HTTP 404")
        return read_html(url, root, page.html)
    response = await _http().get(url)
    if response.status_code >= 500:
        raise RetryableStatus(f"{url}: HTTP {response.status_code}")
    if response.status_code != 200:
        return FetchedPage(url=url, status=response.status_code, error=f"HTTP {response.status_code}")
    if "html" not in response.headers.get("content-type", ""):
        return FetchedPage(url=url, status=200, error="not an HTML page")
    return read_html(url, root, response.text)
