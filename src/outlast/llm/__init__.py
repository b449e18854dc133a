"""Durable LLM calls for Outlast: providers on the official SDKs, fleet-wide rate limits, retries,
circuit breakers, provider fallback and token streaming into the run (see :mod:`outlast.llm.client`).

Also an OpenAI/Anthropic-compatible simulator (:mod:`outlast.llm.simulator`). Names are imported
lazily, so importing the simulator does not load the SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outlast.llm.breaker import BreakerState, CircuitBreaker
    from outlast.llm.client import LLM, BreakerSettings, LLMCall, LLMRetry, LLMStream, Token
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
    from outlast.llm.providers import AnthropicProvider, Completion, Messages, OpenAIProvider, Price, Provider

_EXPORTS = {
    "outlast.llm.breaker": ("BreakerState", "CircuitBreaker"),
    "outlast.llm.client": ("LLM", "BreakerSettings", "LLMCall", "LLMRetry", "LLMStream", "Token"),
    "outlast.llm.errors": (
        "AllProvidersFailed", "LLMError", "ProviderError", "ProviderUnavailable", "RateLimited",
        "StreamInterrupted", "StreamStalled", "StructuredOutputError",
    ),
    "outlast.llm.limits": ("LimitKey", "Limits", "RateLimiter", "RateLimitWait", "estimate_tokens"),
    "outlast.llm.providers": (
        "AnthropicProvider", "Completion", "Messages", "OpenAIProvider", "Price", "Provider",
    ),
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
