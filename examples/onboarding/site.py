"""Fixture company websites for the onboarding example, generated from a seed.

Each company gets ~50 pages under ``/<slug>/``: a home page, about, team, pricing, contact,
careers, product pages, an engineering blog, a news blog full of noise, legal pages, two links
that 404 and one page that answers too slowly. The facts (products, people, pricing, tech stack,
locations) are spread over several pages as labelled lines (``Products: Anvil Pro.``), among
navigation, cookie banners, footers and filler prose. :func:`company` also returns the facts, so
tests know what a complete profile must say.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field

from examples.common.sitehost import Page

SLOW_DELAY = 3.0  # seconds: longer than the per-try fetch timeout of fetch_page
_FIRST = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell",
          "Cyberdyne", "Soylent", "Oscorp", "Gringotts", "Wonka", "Monarch", "Nakatomi")  # fmt: skip
_SECOND = ("Labs", "Systems", "Analytics", "Robotics", "Cloud", "Works", "Dynamics", "Networks")
_PRODUCT = ("Ledger", "Beacon", "Harbor", "Pulse", "Atlas", "Forge", "Relay", "Vault", "Compass", "Signal",
            "Orbit", "Quill", "Prism", "Anchor")  # fmt: skip
_EDITION = ("Pro", "Cloud", "Edge", "Studio", "Insights", "Sync")
_GIVEN = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "John",
          "Radia", "Leslie", "Shafi", "Tim", "Katherine", "Dennis")  # fmt: skip
_FAMILY = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen",
           "McCarthy", "Perlman", "Lamport", "Goldwasser", "Berners-Lee", "Johnson", "Ritchie")  # fmt: skip
_ROLES = ("CEO", "CTO", "COO", "VP Engineering", "Head of Sales", "Head of Design", "CFO")
_TECH = ("Python", "PostgreSQL", "Redis", "Kubernetes", "React", "TypeScript", "Go", "Rust", "Kafka",
         "Terraform", "ClickHouse", "Elixir")  # fmt: skip
_CITIES = ("Berlin", "Lisbon", "Toronto", "Austin", "Singapore", "Nairobi", "Melbourne", "Dublin", "Osaka",
           "Bogota")  # fmt: skip
_FILLER = (
    "We believe great software should feel invisible.",
    "Our customers tell us the onboarding took an afternoon.",
    "Every release goes through the same careful review.",
    "We publish our roadmap and invite feedback on every item.",
    "The team meets every quarter to plan the next steps together.",
    "Security reviews happen before anything reaches production.",
    "Support is answered by the engineers who built the feature.",
    "We measure success by how little our customers need to think about us.",
)
BLOG_POSTS = 26
ENGINEERING_POSTS = 6


@dataclass
class Facts:
    """What a complete profile of one company says."""

    name: str
    products: list[str] = field(default_factory=list)
    people: list[tuple[str, str]] = field(default_factory=list)  # (name, role)
    pricing: list[tuple[str, int]] = field(default_factory=list)  # (plan, USD per month)
    tech_stack: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)


@dataclass
class Company:
    slug: str
    facts: Facts
    pages: dict[str, Page]  # absolute path -> page
    missing: list[str]  # linked paths that 404
    slow: str  # the path that answers too slowly

    @property
    def root(self) -> str:
        return f"/{self.slug}/"


def company(index: int, seed: int = 16) -> Company:
    """Company ``index`` of the fixture (the same for the same ``seed``)."""
    rng = random.Random(f"{seed}:{index}")
    name = f"{_FIRST[index % len(_FIRST)]} {rng.choice(_SECOND)}"
    slug = name.lower().replace(" ", "-") + (f"-{index}" if index >= len(_FIRST) else "")
    facts = Facts(
        name=name,
        products=[f"{p} {rng.choice(_EDITION)}" for p in rng.sample(_PRODUCT, rng.randint(3, 5))],
        people=[
            (f"{g} {f}", role)
            for g, f, role in zip(
                rng.sample(_GIVEN, 4), rng.sample(_FAMILY, 4), rng.sample(_ROLES, 4), strict=True
            )
        ],
        pricing=[
            ("Starter", rng.randint(9, 49)),
            ("Team", rng.randint(50, 149)),
            ("Business", rng.randint(150, 499)),
        ],
        tech_stack=rng.sample(_TECH, rng.randint(3, 5)),
        locations=rng.sample(_CITIES, rng.randint(2, 3)),
    )
    return Company(slug, facts, *_pages(slug, facts, rng))


def _pages(slug: str, facts: Facts, rng: random.Random) -> tuple[dict[str, Page], list[str], str]:
    base = f"/{slug}"
    stack = facts.tech_stack
    slugs = [p.lower().replace(" ", "-") for p in facts.products]
    posts = [f"{base}/blog/{n}" for n in range(1, BLOG_POSTS + 1)]
    eng = [f"{base}/engineering/{n}" for n in range(1, ENGINEERING_POSTS + 1)]
    missing, slow = [f"{base}/press", f"{base}/blog/archive-2019"], f"{base}/status"
    nav = [("Home", f"{base}/"), ("About", f"{base}/about"), ("Team", f"{base}/team"),
           ("Pricing", f"{base}/pricing"), ("Products", f"{base}/products"), ("Blog", f"{base}/blog"),
           ("Engineering", f"{base}/engineering"), ("Careers", f"{base}/careers"),
           ("Contact", f"{base}/contact"), ("Press", missing[0])]  # fmt: skip
    people = "; ".join(f"{who} ({role})" for who, role in facts.people)
    prices = "; ".join(f"{plan} (${usd}/month)" for plan, usd in facts.pricing)
    half = len(facts.tech_stack) // 2

    def page(title: str, body: list[str], links: list[tuple[str, str]] = ()) -> Page:  # type: ignore[assignment]
        filler = rng.sample(_FILLER, 2)
        items = "".join(f'<li><a href="{href}">{html.escape(text)}</a></li>' for text, href in links)
        return Page(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)} | {html.escape(facts.name)}</title>"
            "<style>body{font-family:sans-serif}</style><script>window.analytics=[]</script></head><body>"
            '<div class="cookie-banner">We use cookies. <button>Accept all</button></div>'
            "<header><nav><ul>"
            + "".join(f'<li><a href="{href}">{text}</a></li>' for text, href in nav)
            + f"</ul></nav></header><main><h1>{html.escape(title)}</h1>"
            + "".join(f"<p>{line}</p>" for line in [*body, *filler])
            + (f"<ul>{items}</ul>" if items else "")
            + "</main><aside><h3>Popular</h3><ul>"
            + "".join(f'<li><a href="{p}">Post {p.rsplit("/", 1)[1]}</a></li>' for p in rng.sample(posts, 3))
            + f"</ul></aside><footer>© 2026 {html.escape(facts.name)}. All rights reserved. "
            f'<a href="{base}/legal/privacy">Privacy</a> <a href="{base}/legal/terms">Terms</a></footer>'
            "</body></html>"
        )

    product_links = [(p, f"{base}/products/{s}") for p, s in zip(facts.products, slugs, strict=True)]
    pages = {
        f"{base}/": page(facts.name, [f"{facts.name} helps teams ship with confidence.",
                                      f"<strong>Products:</strong> {facts.products[0]}."]),
        f"{base}/about": page("About us", [f"Founded by engineers, {facts.name} grew from a side project.",
                                           f"<strong>Locations:</strong> {', '.join(facts.locations)}."]),
        f"{base}/team": page("Our team", [f"<strong>People:</strong> {people}."]),
        f"{base}/pricing": page("Pricing", [f"<strong>Pricing:</strong> {prices}.",
                                            "All plans include support and a 30-day trial."]),
        f"{base}/contact": page("Contact", [f"Write to hello@{slug}.example.",
                                            f"<strong>Locations:</strong> {facts.locations[0]}."],
                                [("Service status", slow)]),
        f"{base}/careers": page("Careers", ["We are hiring across the company.",
                                            f"<strong>Tech stack:</strong> {', '.join(stack[:half])}."]),
        f"{base}/products": page("Products", ["Everything we make, in one place."], product_links),
        f"{base}/blog": page("Blog", ["News from the team."],
                             [(f"Post {n}", p) for n, p in enumerate(posts, 1)] + [("Archive", missing[1])]),
        f"{base}/engineering": page("Engineering", ["How we build things."],
                                    [(f"Engineering note {n}", p) for n, p in enumerate(eng, 1)]),
        f"{base}/legal/privacy": page("Privacy policy", ["We keep only what we need to run the service."]),
        f"{base}/legal/terms": page("Terms of service", ["Use the service fairly and lawfully."]),
        slow: Page(page("Status", ["All systems operational."]).html, delay=SLOW_DELAY),
    }  # fmt: skip
    for product, s in zip(facts.products, slugs, strict=True):
        pages[f"{base}/products/{s}"] = page(product, [f"{product} is part of our platform.",
                                                       f"<strong>Products:</strong> {product}."])  # fmt: skip
    for n, path in enumerate(eng, 1):
        stack = facts.tech_stack[half:] if n == 1 else []
        lines = [f"Engineering note {n}: what we learned this month."]
        pages[path] = page(f"Engineering note {n}", [*lines, *(
            [f"<strong>Tech stack:</strong> {', '.join(stack)}."] if stack else [])])  # fmt: skip
    for n, path in enumerate(posts, 1):
        pages[path] = page(f"Post {n}", [f"Post {n} of our blog: thoughts on shipping software."])
    return pages, missing, slow


def companies(n: int, seed: int = 16) -> list[Company]:
    return [company(i, seed) for i in range(n)]


def site_pages(items: list[Company]) -> dict[str, Page]:
    """Every page of ``items``, for one :class:`~examples.common.sitehost.SiteHost`."""
    return {path: p for c in items for path, p in c.pages.items()}
