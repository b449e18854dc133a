"""Durable LLM calls for Outlast: providers on the official SDKs, fleet-wide rate limits, retries,
circuit breakers, provider fallback and token streaming into the run (see :mod:`outlast.llm.llm`).

Also an OpenAI/Anthropic-compatible simulator (:mod:`outlast.llm.simulator`). Names are imported
lazily, so importing the simulator does not load the SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outlast.llm.anthropic_provider import AnthropicProvider
    from outlast.llm.breaker import BreakerSettings, BreakerState, CircuitBreaker
    from outlast.llm.calls import LLMRetry, Token
    from outlast.llm.completion import Completion, Messages, Price
    from outlast.llm.errors import (
        AllProvidersFailed,
        LLMError,
        ProviderError,
        ProviderUnavailable,
        RateLimited,
        StreamInterrupted,
        StreamStalled,
        StructuredOutputError,
    )
    from outlast.llm.limits import LimitKey, Limits, RateLimiter, RateLimitWait, estimate_tokens
    from outlast.llm.llm import LLM, LLMCall, LLMStream
    from outlast.llm.openai_provider import OpenAIProvider
    from outlast.llm.provider import Provider

_EXPORTS = {
    "outlast.llm.anthropic_provider": ("AnthropicProvider",),
    "outlast.llm.breaker": ("BreakerSettings", "BreakerState", "CircuitBreaker"),
    "outlast.llm.calls": ("LLMRetry", "Token"),
    "outlast.llm.completion": ("Completion", "Messages", "Price"),
    "outlast.llm.errors": (
        "AllProvidersFailed", "LLMError", "ProviderError", "ProviderUnavailable", "RateLimited",
        "StreamInterrupted", "StreamStalled", "StructuredOutputError",
    ),
    "outlast.llm.limits": ("LimitKey", "Limits", "RateLimiter", "RateLimitWait", "estimate_tokens"),
    "outlast.llm.llm": ("LLM", "LLMCall", "LLMStream"),
    "outlast.llm.openai_provider": ("OpenAIProvider",),
    "outlast.llm.provider": ("Provider",),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "LLM",
    "AllProvidersFailed",
    "AnthropicProvider",
    "BreakerSettings",
    "BreakerState",
    "CircuitBreaker",
    "Completion",
    "LLMCall",
    "LLMError",
    "LLMRetry",
    "LLMStream",
    "LimitKey",
    "Limits",
    "Messages",
    "OpenAIProvider",
    "Price",
    "Provider",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimitWait",
    "RateLimited",
    "RateLimiter",
    "StreamInterrupted",
    "StreamStalled",
    "StructuredOutputError",
    "Token",
    "estimate_tokens",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'outlast.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
