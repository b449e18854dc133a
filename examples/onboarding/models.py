"""What the onboarding example extracts: facts per page, and the merged company profile."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str
    role: str = ""


class Plan(BaseModel):
    plan: str
    monthly_usd: float | None = None


class PageFacts(BaseModel):
    """Facts one page states about the company; a page that says nothing leaves them empty."""

    products: list[str] = Field(default_factory=list, description="product names")
    people: list[Person] = Field(default_factory=list, description="people at the company and their roles")
    pricing: list[Plan] = Field(default_factory=list, description="price plans, USD per month")
    tech_stack: list[str] = Field(default_factory=list, description="technologies the company uses")
    locations: list[str] = Field(default_factory=list, description="cities where the company has offices")

    def empty(self) -> bool:
        return not (self.products or self.people or self.pricing or self.tech_stack or self.locations)


class Profile(PageFacts):
    """A company's merged profile: what a signup form would have asked for."""

    name: str = Field(description="the company's name")
    url: str = Field(description="the site that was crawled")
    summary: str = Field(description="one or two sentences on what the company does")


def merge(into: PageFacts, more: PageFacts) -> None:
    """Add ``more``'s facts to ``into`` (in order, without duplicates): the live draft's merge."""
    for field in ("products", "people", "pricing", "tech_stack", "locations"):
        have: list[object] = getattr(into, field)
        for item in getattr(more, field):
            if item not in have:
                have.append(item)
