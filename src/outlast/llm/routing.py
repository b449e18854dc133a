"""Which provider serves a call: in order, spilling over, else waiting for the first to free up.

Each provider gets the call in turn (:class:`~outlast.llm.calls.ProviderCalls`). A provider with a
later one behind it may wait ``max_wait`` seconds for capacity; the last may use what is left of
the call's ``timeout``. A provider that spilled reports when its capacity frees up: if every
provider was passed over, the call waits for the one that frees up first, and otherwise fails
with :class:`~outlast.llm.errors.AllProvidersFailed`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from outlast.errors import ConfigError
from outlast.llm.breaker import BreakerSettings, CircuitBreaker, LocalBreaker
from outlast.llm.calls import CallState, LLMRetry, ProviderCalls, Request
from outlast.llm.completion import Completion
from outlast.llm.errors import AllProvidersFailed
from outlast.llm.limits import RateLimiter
from outlast.llm.provider import Provider
from outlast.store.client import RedisClient, redis_from_url

__all__ = ["DEFAULT_BREAKER", "Router"]

DEFAULT_BREAKER = BreakerSettings()


class Router:
    """An ordered list of providers (primary first) and the settings their calls follow.

    It owns the Redis client (when given a URL), the rate limiter and one breaker per provider,
    all created on first use. See :class:`~outlast.llm.llm.LLM` for the parameters.
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        redis: RedisClient | str | None = None,
        max_wait: float = 5.0,
        timeout: float = 300.0,
        retry: LLMRetry | None = None,
        breaker: BreakerSettings | None = DEFAULT_BREAKER,
        wait_notice: float = 2.0,
        window_margin: float = 0.5,
    ) -> None:
        if not providers:
            raise ConfigError("LLM needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ConfigError(f"provider names must be unique, got {names}")
        if max_wait < 0 or timeout <= 0 or window_margin < 0:
            raise ConfigError("LLM: max_wait, window_margin >= 0 and timeout > 0 are required")
        self.providers = list(providers)
        self.max_wait = max_wait
        self.timeout = timeout
        self.retry = retry or LLMRetry()
        self.breaker_settings = breaker
        self.wait_notice = wait_notice
        self.window_margin = window_margin
        self._redis_url = redis if isinstance(redis, str) else None
        self._redis = redis if isinstance(redis, RedisClient) else None
        self._limiter: RateLimiter | None = None
        self._breakers: dict[str, CircuitBreaker | LocalBreaker] = {}

    async def execute(self, request: Request, state: CallState) -> Completion:
        """Serve ``request`` from the first provider that can; raises AllProvidersFailed."""
        deadline = state.started + self.timeout
        skipped: list[dict[str, Any]] = []
        spilled: list[tuple[float, int]] = []
        last = len(self.providers) - 1
        for index, provider in enumerate(self.providers):
            remaining = max(0.0, deadline - time.monotonic())
            budget = min(self.max_wait, remaining) if index < last else remaining
            got = await self._calls(provider).call(
                request, state, budget=budget, deadline=deadline, has_next=index < last
            )
            if isinstance(got, Completion):
                return self._finish(got, state)
            skipped.append(got)
            state.fallbacks.append(got)
            if got["reason"] == "rate_limit_wait" and got["retry_after"] is not None:
                spilled.append((got["retry_after"], index))
        if spilled:  # every provider spilled or failed: wait for the one that frees up first
            retry_after, index = min(spilled)
            remaining = deadline - time.monotonic()
            if retry_after < remaining:
                got = await self._calls(self.providers[index]).call(
                    request, state, budget=remaining, deadline=deadline, has_next=False
                )
                if isinstance(got, Completion):
                    return self._finish(got, state)
                skipped.append(got)
                state.fallbacks.append(got)
        raise AllProvidersFailed(state.errors, skipped)

    def _finish(self, completion: Completion, state: CallState) -> Completion:
        return completion.model_copy(
            update={
                "attempts": state.attempts, "fallbacks": list(state.fallbacks), "errors": list(state.errors),
                "waited": round(state.waited, 6), "latency": round(time.monotonic() - state.started, 6),
            }
        )  # fmt: skip

    def _calls(self, provider: Provider) -> ProviderCalls:
        limiter = self._rate_limiter() if provider.limits is not None else None
        return ProviderCalls(provider, self, self._breaker(provider), limiter)

    async def aclose(self) -> None:
        """Close the providers' SDK clients (and the Redis client opened from a URL)."""
        for provider in self.providers:
            await provider.aclose()
        if self._redis_url is not None and self._redis is not None:
            await self._redis.aclose()
            self._redis = self._limiter = None
            self._breakers.clear()

    def _redis_client(self) -> RedisClient | None:
        if self._redis is None and self._redis_url is not None:
            self._redis = redis_from_url(self._redis_url)
        return self._redis

    def _rate_limiter(self) -> RateLimiter | None:
        if self._limiter is None and (client := self._redis_client()) is not None:
            self._limiter = RateLimiter(client)
        return self._limiter

    def _breaker(self, provider: Provider) -> CircuitBreaker | LocalBreaker | None:
        settings = self.breaker_settings
        if settings is None:
            return None
        breaker = self._breakers.get(provider.name)
        if breaker is None:
            client = self._redis_client()
            if client is None:
                breaker = LocalBreaker(settings)
            else:
                breaker = CircuitBreaker(client, provider.name, **settings.__dict__)
            self._breakers[provider.name] = breaker
        return breaker
