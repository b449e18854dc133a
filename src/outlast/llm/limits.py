"""Fleet-wide LLM rate limits and concurrency caps, with all state held in Redis.

Per provider+model, :class:`RateLimiter` keeps an **exact sliding window** (default 60 s): a sorted
set ``grant id → admit time (ms)`` plus a hash of each grant's request/token cost with running
totals, so that in *any* window at most ``rpm`` requests and ``tpm`` tokens are admitted across the
fleet (a GCRA with burst would allow up to twice that). The **concurrency cap** is a sorted set
``grant id → lease expiry (ms)`` whose expired leases are reaped on every acquire, so a crashed
worker leaks its slot only until the lease TTL. Check-and-admit is one Lua script on the server's
clock (``TIME``): atomic across processes, and machines with skewed clocks agree (the scripts are
in :mod:`outlast.llm.limit_scripts`). A finished call settles its usage and frees its slot in one
more (:meth:`RateLimiter.finish`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outlast.errors import ConfigError, OutlastError
from outlast.llm import limit_scripts
from outlast.store.client import RedisClient, register_script
from outlast.store.errors import guard
from outlast.store.keys import llm_concurrency_key, llm_cost_key, llm_window_key

DEFAULT_COMPLETION_TOKENS = 1024
"""Completion allowance charged by :func:`estimate_tokens` when the caller sets no ``max_tokens``."""

_MESSAGE_OVERHEAD = 4  # role/separator tokens chat formats add around each message
_REPLY_PRIMING = 3  # tokens the provider adds to prime the assistant reply
_IMAGE_TOKENS = 765  # OpenAI's cost of one 1024x1024 high-detail image; a safe middle for others


class RateLimitWait(OutlastError):
    """No capacity could be had within ``max_wait``; the caller may spill over to a fallback.

    ``retry_after`` is the server's estimate of when capacity frees up (``inf`` when the request
    can never fit, e.g. more tokens than the whole ``tpm``), ``reasons`` which limits denied it.
    """

    def __init__(self, key: LimitKey, retry_after: float, reasons: tuple[str, ...]) -> None:
        when = "never fits" if math.isinf(retry_after) else f"retry after {retry_after:.3f}s"
        super().__init__(f"LLM rate limit for {key.provider}/{key.model}: {','.join(reasons)} ({when})")
        self.key = key
        self.retry_after = retry_after
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class LimitKey:
    """What a limit applies to: one model of one provider."""

    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class Limits:
    """Per provider+model limits; ``None`` means unlimited. ``window_s`` is the sliding window."""

    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    window_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"Limits.{name} must be >= 1 or None, got {value!r}")
        if not self.window_s >= 0.001:
            raise ConfigError(f"Limits.window_s must be >= 0.001, got {self.window_s!r}")


@dataclass(frozen=True, slots=True)
class Grant:
    """Capacity admitted by :meth:`RateLimiter.acquire`. Times are server epoch seconds."""

    id: str
    key: LimitKey
    requests: int
    tokens: int
    admitted_at: float
    lease_expires_at: float | None  # None when the limits had no concurrency cap


@dataclass(frozen=True, slots=True)
class Denied:
    """No capacity now.

    ``retry_after`` (seconds) is when enough capacity frees up: exact for the window limits, the
    earliest lease expiry for the concurrency cap (a release may come sooner).
    ``min_retry_after`` is a lower bound before which a retry cannot succeed.
    Both are ``inf`` when the request can never fit the limits.
    """

    retry_after: float
    min_retry_after: float
    reasons: tuple[str, ...]  # subset of "rpm", "tpm", "concurrency"


@dataclass(frozen=True, slots=True)
class Usage:
    """What currently counts against a key: window totals and live leases."""

    requests: int
    tokens: int
    in_flight: int


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RateLimiter:
    """Atomic fleet-wide admission of LLM calls against :class:`Limits`, per :class:`LimitKey`.

    ``clock`` (monotonic seconds) only measures ``max_wait`` in :meth:`wait_acquire`; the limits
    themselves always run on the Redis server's clock.
    """

    def __init__(self, redis: RedisClient, *, clock: Callable[[], float] | None = None) -> None:
        self._redis = redis
        self._clock = clock or time.monotonic
        self._acquire = register_script(redis, limit_scripts.ACQUIRE)
        self._settle = register_script(redis, limit_scripts.SETTLE)
        self._finish = register_script(redis, limit_scripts.FINISH)
        self._renew = register_script(redis, limit_scripts.RENEW)
        self._usage = register_script(redis, limit_scripts.USAGE)

    @staticmethod
    def _keys(key: LimitKey) -> list[str]:
        return [f(key.provider, key.model) for f in (llm_window_key, llm_cost_key, llm_concurrency_key)]

    async def acquire(
        self,
        key: LimitKey,
        *,
        requests: int = 1,
        tokens: int,
        limits: Limits,
        lease_ttl: float = 120.0,
    ) -> Grant | Denied:
        """Admit ``requests`` calls costing ``tokens`` (estimated) now, or say when to retry."""
        if requests < 1 or tokens < 0:
            raise ConfigError(f"requests must be >= 1 and tokens >= 0, got {requests}, {tokens}")
        if lease_ttl <= 0:
            raise ConfigError(f"lease_ttl must be > 0, got {lease_ttl}")
        grant_id = uuid.uuid4().hex
        caps = [-1 if v is None else v for v in (limits.rpm, limits.tpm, limits.max_concurrency)]
        args: list[str | int] = [grant_id, requests, tokens, *caps, _ms(limits.window_s), _ms(lease_ttl)]
        res: Any = await guard(self._acquire(keys=self._keys(key), args=args), "rate limiter acquire")
        if int(res[0]) == 1:
            lease_until = None if int(res[2]) < 0 else int(res[2]) / 1000
            return Grant(grant_id, key, requests, tokens, int(res[1]) / 1000, lease_until)
        raw = res[1]
        reasons = tuple((raw.decode() if isinstance(raw, bytes) else str(raw)).split(","))
        wretry, cretry = int(res[2]), int(res[3])
        if wretry < 0:
            return Denied(retry_after=math.inf, min_retry_after=math.inf, reasons=reasons)
        return Denied(retry_after=max(wretry, cretry) / 1000, min_retry_after=wretry / 1000, reasons=reasons)

    async def wait_acquire(
        self,
        key: LimitKey,
        *,
        requests: int = 1,
        tokens: int,
        limits: Limits,
        max_wait: float,
        lease_ttl: float = 120.0,
    ) -> Grant:
        """Like :meth:`acquire` but wait up to ``max_wait`` seconds for capacity.

        Raises :class:`RateLimitWait` as soon as the server says capacity cannot free up in time,
        so the caller can spill over to a fallback provider without burning the whole wait.
        """
        deadline = self._clock() + max_wait
        poll = 0.02  # concurrency slots free on release, which no clock predicts: poll with backoff
        while True:
            res = await self.acquire(
                key, requests=requests, tokens=tokens, limits=limits, lease_ttl=lease_ttl
            )
            if isinstance(res, Grant):
                return res
            remaining = deadline - self._clock()
            if remaining <= 0 or res.min_retry_after > remaining:
                raise RateLimitWait(key, res.retry_after, res.reasons)
            if "concurrency" in res.reasons:
                delay = max(res.min_retry_after, min(poll, res.retry_after))
                poll = min(poll * 2, 0.5)
            else:
                delay = res.retry_after
            delay = min(delay, remaining)  # a last try at the deadline: a release may come meanwhile
            # jitter spreads the waiters that were all told the same instant
            await asyncio.sleep(delay + random.uniform(0, 0.005 + 0.02 * delay))

    async def settle(self, grant: Grant, actual_tokens: int) -> bool:
        """Replace the grant's estimated token cost with the provider-reported one.

        Returns False when the grant has already left the window (nothing left to correct).
        """
        if actual_tokens < 0:
            raise ConfigError(f"actual_tokens must be >= 0, got {actual_tokens}")
        cost = llm_cost_key(grant.key.provider, grant.key.model)
        return bool(
            await guard(self._settle(keys=[cost], args=[grant.id, actual_tokens]), "rate limiter settle")
        )

    async def finish(self, grant: Grant, actual_tokens: int) -> tuple[bool, bool]:
        """:meth:`settle` and :meth:`release` in one script (one round trip), for a finished call.

        Returns ``(settled, released)``, each as those two methods would.
        """
        if actual_tokens < 0:
            raise ConfigError(f"actual_tokens must be >= 0, got {actual_tokens}")
        _, cost, lease = self._keys(grant.key)
        res: Any = await guard(
            self._finish(keys=[cost, lease], args=[grant.id, actual_tokens]), "rate limiter finish"
        )
        # a grant without a lease never entered the lease set: its ZREM found nothing
        return bool(int(res[0])), bool(int(res[1]))

    async def release(self, grant: Grant) -> bool:
        """Free the grant's concurrency slot; False if it had none or it already expired."""
        if grant.lease_expires_at is None:
            return False
        lease = llm_concurrency_key(grant.key.provider, grant.key.model)
        return bool(await guard(self._redis.zrem(lease, grant.id), "rate limiter release"))

    async def renew(self, grant: Grant, lease_ttl: float = 120.0) -> float | None:
        """Extend a live lease (long streaming calls); returns the new expiry or None if it lapsed."""
        if grant.lease_expires_at is None:
            return None
        lease = llm_concurrency_key(grant.key.provider, grant.key.model)
        until = int(
            await guard(self._renew(keys=[lease], args=[grant.id, _ms(lease_ttl)]), "rate limiter renew")
        )
        return None if until < 0 else until / 1000

    async def usage(self, key: LimitKey, limits: Limits) -> Usage:
        """Requests and tokens in the current window, and live concurrency leases."""
        res: Any = await guard(
            self._usage(keys=self._keys(key), args=[_ms(limits.window_s)]), "rate limiter usage"
        )
        return Usage(requests=int(res[0]), tokens=int(res[1]), in_flight=int(res[2]))


def _size(value: Any) -> tuple[int, int]:
    """(text characters, images) in message content or a content block."""
    if value is None:
        return 0, 0
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, Mapping):
        if "image" in str(value.get("type", "")):
            return 0, 1
        if isinstance(value.get("text"), str):
            return len(value["text"]), 0
        # tool_use / tool_result blocks: the model reads their JSON; tool results nest content
        chars, images = _size(value.get("content"))
        return chars + len(
            json.dumps({k: v for k, v in value.items() if k != "content"}, default=str)
        ), images
    if isinstance(value, Sequence):
        sizes = [_size(part) for part in value]
        return sum(c for c, _ in sizes), sum(i for _, i in sizes)
    return len(json.dumps(value, default=str)), 0


def estimate_tokens(messages: Sequence[Mapping[str, Any]] | str, max_tokens: int | None = None) -> int:
    """Estimate a chat call's token cost without a tokenizer, to reserve before the call.

    Prompt: ceil(characters / 4) per message (English averages ~4 characters a token on both
    OpenAI and Anthropic tokenizers) + 4 tokens framing per message + 3 for the reply priming;
    images count 765 tokens each; tool calls, names and non-text blocks count as their JSON.
    Completion: ``max_tokens``, or :data:`DEFAULT_COMPLETION_TOKENS` when unset. Correct the
    estimate with the provider's reported usage via :meth:`RateLimiter.settle`.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    total = _REPLY_PRIMING
    for message in messages:
        chars, images = _size(message.get("content"))
        extras = {k: v for k, v in message.items() if k not in ("role", "content") and v is not None}
        if extras:  # name, tool_calls, function_call, tool_call_id ...
            chars += len(json.dumps(extras, default=str))
        total += _MESSAGE_OVERHEAD + math.ceil(chars / 4) + images * _IMAGE_TOKENS
    return total + (DEFAULT_COMPLETION_TOKENS if max_tokens is None else max(0, max_tokens))
