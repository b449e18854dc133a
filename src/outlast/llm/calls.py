"""One LLM call's requests to one provider: capacity, retries, and what each request reports back.

:class:`ProviderCalls` runs one provider's share of a call: the breaker admits it (a half-open
probe is handed back if the call goes elsewhere without using it), fleet-wide capacity is reserved
for the estimated tokens (or the call is told to spill over), the request is made, and its
outcome is reported — usage settled and the concurrency slot freed in one step, the breaker told
of a success or failure. Retryable errors are retried with backoff (:class:`LLMRetry`) until the
provider's attempts or the call's budget run out. Which provider comes next is
:mod:`outlast.llm.routing`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from outlast.core.emit import log
from outlast.errors import ConfigError
from outlast.llm.breaker import CircuitBreaker, LocalBreaker
from outlast.llm.completion import Completion
from outlast.llm.errors import ProviderError, RateLimited, StreamInterrupted
from outlast.llm.limits import Grant, RateLimiter, RateLimitWait, estimate_tokens
from outlast.llm.provider import Provider

__all__ = ["CallSettings", "CallState", "LLMRetry", "ProviderCalls", "Request", "Token"]


@dataclass(frozen=True)
class LLMRetry:
    """How one LLM call retries.

    ``attempts``: requests per provider for retryable errors (then the next provider). The delay
    after failed request ``n`` is ``backoff_base * backoff ** (n - 1)`` capped at ``max_delay``, with
    full jitter; a ``Retry-After`` (capped at ``max_retry_after``) is a lower bound. ``stream_attempts``:
    step tries for a stream interrupted after it emitted output (``stream_backoff`` seconds apart).
    """

    attempts: int = 3
    backoff_base: float = 0.5
    backoff: float = 2.0
    max_delay: float = 10.0
    max_retry_after: float = 30.0
    jitter: bool = True
    stream_attempts: int = 3
    stream_backoff: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.stream_attempts < 1:
            raise ConfigError("LLMRetry: attempts and stream_attempts must be >= 1")
        if self.backoff < 1 or min(self.backoff_base, self.max_delay, self.max_retry_after) < 0:
            raise ConfigError("LLMRetry: backoff must be >= 1 and delays must not be negative")

    def delay(self, failed: int, retry_after: float | None) -> float:
        raw = min(self.max_delay, self.backoff_base * self.backoff ** (failed - 1))
        delay = random.uniform(0, raw) if self.jitter else raw
        if retry_after is not None:
            honoured = min(retry_after, self.max_retry_after)
            delay = max(delay, honoured + (random.uniform(0, 0.1 * honoured) if self.jitter else 0))
        return delay


class Token(str):
    """A streamed text delta. ``try_`` is the step try it belongs to: when it grows, the text
    received so far was a failed try's partial output and starts over."""

    try_: int

    def __new__(cls, text: str, try_: int = 1) -> Token:
        token = super().__new__(cls, text)
        token.try_ = try_
        return token


@dataclass
class CallState:
    """What one call's step tries share (set in a context variable around the step)."""

    response_model: type[BaseModel] | None = None
    parsed: BaseModel | None = None  # the validated instance, when the step ran here (not replayed)
    sink: Callable[[Token], None] | None = None
    runs: int = 0  # step tries that ran here; 0 when the step was replayed
    attempts: int = 0
    waited: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Request:
    """What a call sends to every provider it tries. ``emit``: where stream deltas go (None: a
    plain request); ``json_mode``: ask for a JSON object (structured calls)."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]
    emit: Callable[[str], None] | None = None
    json_mode: bool = False


class CallSettings(Protocol):
    """The LLM settings a provider's requests follow (read live from the LLM)."""

    retry: LLMRetry
    max_wait: float
    wait_notice: float
    window_margin: float


Breaker = CircuitBreaker | LocalBreaker


class ProviderCalls:
    """One provider behind its breaker and rate limiter (either may be None)."""

    def __init__(
        self,
        provider: Provider,
        settings: CallSettings,
        breaker: Breaker | None,
        limiter: RateLimiter | None,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.breaker = breaker
        self.limiter = limiter

    async def call(
        self, request: Request, state: CallState, *, budget: float, deadline: float, has_next: bool
    ) -> Completion | dict[str, Any]:
        """Try this provider (with its retries): its Completion, or why it was passed over.

        ``budget``: seconds this provider may wait for capacity; ``deadline``: the call's end
        (monotonic); ``has_next``: a later provider exists, so long retry delays spill over.
        """
        provider, breaker, limiter, retry = self.provider, self.breaker, self.limiter, self.settings.retry
        estimate = provider.estimate_tokens(request.messages, request.params)
        tries = 0
        while True:
            admitted = await breaker.admit() if breaker is not None else "call"
            if admitted is None:
                return {"provider": provider.name, "reason": "breaker_open"}
            probe = admitted == "probe"
            grant: Grant | None = None
            try:
                if limiter is not None:
                    try:
                        grant = await self._reserve(limiter, estimate, budget, state)
                    except RateLimitWait as exc:
                        if probe:  # unused: let the next caller probe instead of waiting it out
                            await self._cancel_probe()
                        after = None if math.isinf(exc.retry_after) else round(exc.retry_after, 3)
                        return {"provider": provider.name, "reason": "rate_limit_wait", "retry_after": after,
                                "limits": list(exc.reasons)}  # fmt: skip
                tries += 1
                state.attempts += 1
                failure: ProviderError | StreamInterrupted | None = None
                try:
                    completion = await self._request(request)
                except (ProviderError, StreamInterrupted) as exc:
                    failure = exc
            except BaseException:
                await self._abandon(grant, probe)
                raise
            if failure is None:
                await self._report(request, grant, completion, None)
                return completion
            error = failure.cause if isinstance(failure, StreamInterrupted) else failure
            await self._report(request, grant, None, error)
            state.errors.append(error.info())
            if isinstance(failure, StreamInterrupted) or not error.retryable:
                raise failure
            delay = retry.delay(tries, error.retry_after)
            if (
                tries >= retry.attempts
                or time.monotonic() + delay > deadline
                or (has_next and delay > self.settings.max_wait)
            ):
                return {"provider": provider.name, "reason": "errors", "error": error.info()}
            if delay >= self.settings.wait_notice:
                log(f"{provider.name}: {error.message[:200]}; retrying in {delay:.1f}s", level="warning",
                    provider=provider.name, delay=round(delay, 3))  # fmt: skip
            await asyncio.sleep(delay)

    async def _report(
        self,
        request: Request,
        grant: Grant | None,
        completion: Completion | None,
        error: ProviderError | None,
    ) -> None:
        """Report a finished request in one concurrent burst (~1 round trip): the usage and the
        concurrency slot in one script, the breaker's verdict alongside."""
        reports: list[Awaitable[Any]] = []
        if self.limiter is not None and grant is not None:
            # A failed request produced no completion: keep only its prompt's estimate.
            used = (
                completion.tokens_in + completion.tokens_out
                if completion is not None
                else estimate_tokens(request.messages, 0)
            )
            reports.append(self.limiter.finish(grant, used))
        if self.breaker is not None:
            # A 429 or a 4xx proves the provider is up: only outages count against it.
            healthy = error is None or isinstance(error, RateLimited) or not error.retryable
            reports.append(self.breaker.record_success() if healthy else self.breaker.record_failure())
        await asyncio.gather(*reports)

    async def _cancel_probe(self) -> None:
        if self.breaker is not None:
            await self.breaker.cancel_probe()

    async def _abandon(self, grant: Grant | None, probe: bool) -> None:
        """Cancelled, or failed outside the provider: free the slot and hand back the probe."""
        cleanup: list[Awaitable[Any]] = []
        if self.limiter is not None and grant is not None:
            cleanup.append(self.limiter.release(grant))
        if probe:
            cleanup.append(self._cancel_probe())
        # Best effort: the original error matters more, and a lost slot or probe lapses on its own.
        await asyncio.gather(*cleanup, return_exceptions=True)

    async def _reserve(self, limiter: RateLimiter, estimate: int, budget: float, state: CallState) -> Grant:
        """Capacity for ``estimate`` tokens: now, after a wait within ``budget``, or RateLimitWait."""
        provider = self.provider
        assert provider.limits is not None
        limits, margin = provider.limits, self.settings.window_margin
        if margin:
            limits = dataclasses.replace(limits, window_s=limits.window_s + margin)
        key, ttl = provider.limit_key, max(120.0, 2 * provider.timeout)
        first = await limiter.acquire(key, tokens=estimate, limits=limits, lease_ttl=ttl)
        if isinstance(first, Grant):
            return first
        if first.min_retry_after > budget:
            raise RateLimitWait(key, first.retry_after, first.reasons)
        if first.retry_after >= self.settings.wait_notice:
            wait, why = min(first.retry_after, budget), ", ".join(first.reasons)
            log(f"waiting up to {wait:.1f}s for {key.provider}/{key.model} capacity ({why})",
                provider=key.provider, model=key.model, reasons=list(first.reasons))  # fmt: skip
        started = time.monotonic()
        try:
            return await limiter.wait_acquire(
                key, tokens=estimate, limits=limits, max_wait=budget, lease_ttl=ttl
            )
        finally:
            state.waited += time.monotonic() - started

    async def _request(self, request: Request) -> Completion:
        """One request; a stream's deltas go to ``request.emit`` as they arrive."""
        provider, messages, params = self.provider, request.messages, request.params
        if request.emit is None:
            return await provider.complete(messages, json_mode=request.json_mode, **params)
        emitted = 0
        try:
            stream = provider.stream(messages, json_mode=request.json_mode, **params)
            async with contextlib.aclosing(stream) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        return item
                    request.emit(item)
                    emitted += len(item)
        except ProviderError as exc:
            if emitted:
                raise StreamInterrupted(exc, emitted) from exc
            raise
        raise RuntimeError(f"provider {provider.name} stream ended without a completion")
