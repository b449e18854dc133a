"""Onboarding enrichment in the background: crawl a company's site, extract facts from every page
with an LLM, and publish the profile as it fills in. ``outlast worker examples.onboarding`` serves
the workflows ``onboarding`` (a batch) and ``onboarding_company`` (one company)."""

from examples.onboarding.workflow import onboarding, onboarding_company

__all__ = ["onboarding", "onboarding_company"]
