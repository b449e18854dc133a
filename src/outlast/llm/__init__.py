"""LLM helpers for Outlast, including an OpenAI-compatible simulator (:mod:`outlast.llm.simulator`)."""
