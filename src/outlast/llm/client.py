"""``LLM``: durable, rate-limited, fallback-capable LLM calls whose tokens stream into the run.

::

    limits = Limits(rpm=500, tpm=200_000, max_concurrency=50)
    llm = LLM([OpenAIProvider("openai", "gpt-4o-mini", limits=limits),
               AnthropicProvider("anthropic", "claude-haiku-4-5")], redis=redis)
    reply = await llm.complete(messages)               # -> Completion (text, provider, tokens, cost, ...)
    answer = await llm.complete(messages, response_model=Answer)   # -> Answer (validated, re-asked)
    async for token in llm.stream(messages): ...      # text deltas (Token, a str)
    reply = await llm.stream(messages)                 # or the whole Completion

**One call = one step.** Inside a workflow each ``complete``/``stream`` call is one durable component
step named ``llm.name``: its arguments are the messages, the parameters and the mode (never a key),
its result is the :class:`~outlast.llm.providers.Completion` (provider, model, tokens in/out,
latency, attempts, fallbacks, errors, wait, estimated cost), so the trace shows who served it and a
replayed run returns the stored result without an HTTP request. Streamed deltas are written to the
run stream as ``output`` frames of that step. Outside a workflow the same code is a plain call.

**Per call**, providers are tried in order:

1. the provider's circuit breaker must allow the call (open → next provider at once);
2. with ``redis`` and ``provider.limits``, fleet-wide capacity is reserved for the estimated tokens
   (:class:`~outlast.llm.limits.RateLimiter`, settled with the reported usage afterwards, the
   concurrency slot always released; the window is widened by ``window_margin`` to absorb
   network jitter). If a later provider exists and the wait would exceed
   ``max_wait``, the call **spills over** to it; the last provider waits up to ``timeout``. If every
   provider spilled, the call waits for the one that frees up first. A wait of ``wait_notice``
   seconds or more is announced with an ``outlast.log`` event of the step;
3. the request is made; retryable errors (429, 408/409, 5xx, connection errors, timeouts, stalled
   streams) are retried with exponential backoff and full jitter, honouring ``Retry-After`` (capped
   at ``retry.max_retry_after``), up to ``retry.attempts`` requests per provider, then the next
   provider is tried — at once when the delay would exceed ``max_wait`` and one exists.
   Non-retryable errors (400/401/403/404/422) fail fast with the provider's message;
4. breakers record successes and failures (5xx/connection/timeout/stall; a 429 or a 4xx proves the
   provider is up and counts as a success). A half-open breaker admits a probe that restores it.

**Streams.** A chunk gap of ``provider.idle_timeout`` is a stall. A failure *before* any delta was
emitted is retried as above. A failure *after* deltas were emitted raises
:class:`~outlast.llm.errors.StreamInterrupted` out of the step's try, so the step itself retries
(``step.retrying``; the next try's ``output`` frames carry ``try`` + 1, and clients discard the
partial output as docs/protocol.md §6 says), up to ``retry.stream_attempts`` tries.

**Without redis** there are no fleet-wide rate limits (``Limits`` are ignored; providers' own 429s
are still honoured and can spill over) and each provider's breaker is kept in this process
(consecutive-failure rule only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from outlast.core import serde
from outlast.core.component import Component, StepCall
from outlast.core.context import current_frame
from outlast.core.emit import log
from outlast.core.retry import Retry
from outlast.errors import ConfigError
from outlast.llm.breaker import CircuitBreaker
from outlast.llm.errors import (
    AllProvidersFailed,
    ProviderError,
    RateLimited,
    StreamInterrupted,
    StructuredOutputError,
)
from outlast.llm.limits import Grant, RateLimiter, RateLimitWait, estimate_tokens
from outlast.llm.providers import Completion, Messages, Provider, normalize_messages

__all__ = ["LLM", "BreakerSettings", "LLMCall", "LLMRetry", "LLMStream", "Token"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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


@dataclass(frozen=True)
class BreakerSettings:
    """Per-provider circuit breaker settings (see :class:`~outlast.llm.breaker.CircuitBreaker`)."""

    failure_threshold: int = 5
    error_rate: float | None = 0.5
    min_calls: int = 20
    window_s: float = 30.0
    cooldown_s: float = 10.0
    half_open_probes: int = 1
    probe_timeout_s: float = 60.0


class _LocalBreaker:
    """An in-process breaker (no Redis): consecutive failures open it, same states as the shared one."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = "closed"
        self.consecutive = 0
        self.opened_until = 0.0
        self.probes = 0
        self.probe_until = 0.0

    async def allow(self) -> bool:
        now = time.monotonic()
        if self.state == "open" and now >= self.opened_until:
            self.state, self.probes = "half_open", 0
        if self.state == "half_open" and self.probes and now >= self.probe_until:
            self.probes = 0
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.probes < self.settings.half_open_probes:
            self.probes += 1
            self.probe_until = now + self.settings.probe_timeout_s
            return True
        return False

    async def record_success(self) -> None:
        if self.state != "open":
            self.state, self.consecutive, self.probes = "closed", 0, 0

    async def record_failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or (
            self.state == "closed" and self.consecutive >= self.settings.failure_threshold
        ):
            self.state, self.probes = "open", 0
            self.opened_until = time.monotonic() + self.settings.cooldown_s


class Token(str):
    """A streamed text delta. ``try_`` is the step try it belongs to: when it grows, the text
    received so far was a failed try's partial output and starts over."""

    try_: int

    def __new__(cls, text: str, try_: int = 1) -> Token:
        token = super().__new__(cls, text)
        token.try_ = try_
        return token


@dataclass
class _CallState:
    """What one call's step tries share (set in a context variable around the step)."""

    response_model: type[BaseModel] | None = None
    parsed: BaseModel | None = None  # the validated instance, when the step ran here (not replayed)
    sink: Callable[[Token], None] | None = None
    tries: int = 0
    attempts: int = 0
    waited: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


_STATE: ContextVar[_CallState | None] = ContextVar("outlast_llm_call", default=None)


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, StreamInterrupted)


def _model_name(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class LLM:
    """An ordered list of providers (primary first) behind durable, limited, retried calls.

    ``redis``: a client or URL for fleet-wide limits and shared breakers (None: see module docs).
    ``max_wait``: seconds a call may wait for one provider's capacity (or retry delay) before
    spilling over to the next. ``timeout``: the whole call's budget in seconds (waits, retries,
    fallbacks). ``breaker``: settings, or None for no breakers. ``wait_notice``: waits this long
    are announced with a log event. ``max_reasks``: re-asks after a structured reply fails
    validation. ``name``: the step name in workflows. ``window_margin``: seconds added to each
    ``Limits.window_s`` when reserving — a grant is timestamped when admitted but reaches the
    provider a little later, by varying amounts (connection setup, scheduling), so an exact window
    here could let the provider count a few more than its limit in *its* window; the margin absorbs
    that much delivery jitter (0.5 s costs <1% of a 60 s window's throughput).
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        redis: aioredis.Redis | str | None = None,
        name: str = "llm",
        max_wait: float = 5.0,
        timeout: float = 300.0,
        retry: LLMRetry | None = None,
        breaker: BreakerSettings | None = BreakerSettings(),
        wait_notice: float = 2.0,
        max_reasks: int = 2,
        window_margin: float = 0.5,
    ) -> None:
        if not providers:
            raise ConfigError("LLM needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ConfigError(f"provider names must be unique, got {names}")
        if max_wait < 0 or timeout <= 0 or max_reasks < 0 or window_margin < 0:
            raise ConfigError("LLM: max_wait, max_reasks, window_margin >= 0 and timeout > 0 are required")
        self.providers = list(providers)
        self.name = name
        self.max_wait = max_wait
        self.timeout = timeout
        self.retry = retry or LLMRetry()
        self.breaker_settings = breaker
        self.wait_notice = wait_notice
        self.max_reasks = max_reasks
        self.window_margin = window_margin
        self._redis_url = redis if isinstance(redis, str) else None
        self._redis = redis if isinstance(redis, aioredis.Redis) else None
        self._limiter: RateLimiter | None = None
        self._breakers: dict[str, CircuitBreaker | _LocalBreaker] = {}
        step_retry = Retry(
            attempts=self.retry.stream_attempts, retry_on=_interrupted, backoff=1.0,
            backoff_base=self.retry.stream_backoff, jitter=self.retry.jitter,
        )  # fmt: skip
        self._component: Component[..., dict[str, Any]] = Component(self._step, name=name, retry=step_retry)

    def __repr__(self) -> str:
        return f"<LLM {self.name} providers={[p.name for p in self.providers]}>"

    # -- public API ---------------------------------------------------------------------------

    @overload
    def complete(
        self, messages: Messages, *, response_model: None = None, **params: Any
    ) -> LLMCall[Completion]: ...
    @overload
    def complete(self, messages: Messages, *, response_model: type[M], **params: Any) -> LLMCall[M]: ...
    def complete(
        self, messages: Messages, *, response_model: type[BaseModel] | None = None, **params: Any
    ) -> LLMCall[Any]:
        """One call; await it for the :class:`Completion`, or the ``response_model`` instance.

        The step is created (its position in the run fixed) when this is *called*, so
        ``outlast.gather(llm.complete(a), llm.complete(b))`` is deterministic.
        """
        name = _model_name(response_model) if response_model is not None else None
        call = self._component(*self._args(messages, params), False, name)
        return LLMCall(call, response_model)

    def stream(self, messages: Messages, **params: Any) -> LLMStream:
        """One streaming call: ``async for token in ...`` yields :class:`Token` deltas, ``await ...``
        returns the :class:`Completion`. See :class:`LLMStream`."""
        return LLMStream(self._component(*self._args(messages, params), True, None))

    async def aclose(self) -> None:
        """Close the providers' SDK clients (and the Redis client this LLM opened from a URL)."""
        for provider in self.providers:
            await provider.aclose()
        if self._redis_url is not None and self._redis is not None:
            await self._redis.aclose()
            self._redis = self._limiter = None
            self._breakers.clear()

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the step -------------------------------------------------------------------------------

    @staticmethod
    def _args(messages: Messages, params: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        msgs = serde.to_jsonable(normalize_messages(messages), "LLM messages")
        return msgs, serde.to_jsonable(dict(params), "LLM call parameters")

    async def _step(
        self,
        messages: list[Any],
        params: dict[str, Any],
        stream: bool = False,
        response_model: str | None = None,
    ) -> dict[str, Any]:
        """The body of one LLM step try (runs inside the component machinery)."""
        state = _STATE.get()
        if state is None or (response_model is not None and state.response_model is None):
            raise ConfigError(f"call {self.name} through LLM.complete()/LLM.stream(), not its component")
        state.tries += 1
        frame = current_frame.get()
        emit: Callable[[str], None] | None = None
        if frame is not None:
            for provider in self.providers:  # mask keys wherever they might surface (error texts)
                with contextlib.suppress(ConfigError):
                    frame.ctx.secrets.add(provider.api_key())
        if stream:
            writer, step_id = (frame.ctx.writer, frame.step_id) if frame is not None else (None, None)
            sink, try_ = state.sink, state.tries

            def emit(delta: str) -> None:
                if writer is not None and step_id is not None:
                    writer.output(step_id, delta, try_)
                if sink is not None:
                    sink(Token(delta, try_))

        if state.response_model is not None:
            completion = await self._structured(messages, params, state.response_model, state)
        else:
            completion = await self._execute(messages, params, emit, False, state)
        return completion.model_dump(mode="json")

    async def _structured(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        model: type[BaseModel],
        state: _CallState,
    ) -> Completion:
        schema = json.dumps(model.model_json_schema(), separators=(",", ":"))
        convo = [
            {"role": "system", "content": "Reply with one JSON object and nothing else (no prose, no code "
             f"fences). It must validate against this JSON Schema: {schema}"},
            *messages,
        ]  # fmt: skip
        tokens_in = tokens_out = 0
        cost: float | None = None
        error = ""
        for ask in range(self.max_reasks + 1):
            reply = await self._execute(convo, params, None, True, state)
            tokens_in, tokens_out = tokens_in + reply.tokens_in, tokens_out + reply.tokens_out
            if reply.cost is not None:
                cost = (cost or 0.0) + reply.cost
            fenced = _FENCE.match(reply.text)
            try:
                parsed = model.model_validate_json(fenced.group(1) if fenced else reply.text)
            except ValidationError as exc:
                error = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                )
                feedback = (
                    f"Your reply did not validate: {error}. Reply again with only the corrected JSON object."
                )
                convo = [
                    *convo,
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": feedback},
                ]
                continue
            state.parsed = parsed
            return reply.model_copy(
                update={
                    "parsed": parsed.model_dump(mode="json"), "reasks": ask, "tokens_in": tokens_in,
                    "tokens_out": tokens_out, "cost": None if cost is None else round(cost, 8),
                }
            )  # fmt: skip
        raise StructuredOutputError(model.__name__, self.max_reasks + 1, error, reply.text)

    # -- provider selection -----------------------------------------------------------------------

    async def _execute(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        emit: Callable[[str], None] | None,
        json_mode: bool,
        state: _CallState,
    ) -> Completion:
        deadline = state.started + self.timeout
        skipped: list[dict[str, Any]] = []
        spilled: list[tuple[float, int]] = []
        last = len(self.providers) - 1
        for index, provider in enumerate(self.providers):
            remaining = max(0.0, deadline - time.monotonic())
            budget = min(self.max_wait, remaining) if index < last else remaining
            got = await self._via(provider, messages, params, emit, json_mode, state, budget, index < last)
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
                got = await self._via(
                    self.providers[index], messages, params, emit, json_mode, state, remaining, False
                )
                if isinstance(got, Completion):
                    return self._finish(got, state)
                skipped.append(got)
                state.fallbacks.append(got)
        raise AllProvidersFailed(state.errors, skipped)

    def _finish(self, completion: Completion, state: _CallState) -> Completion:
        return completion.model_copy(
            update={
                "attempts": state.attempts, "fallbacks": list(state.fallbacks), "errors": list(state.errors),
                "waited": round(state.waited, 6), "latency": round(time.monotonic() - state.started, 6),
            }
        )  # fmt: skip

    async def _via(
        self,
        provider: Provider,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        emit: Callable[[str], None] | None,
        json_mode: bool,
        state: _CallState,
        budget: float,
        has_next: bool,
    ) -> Completion | dict[str, Any]:
        """Try one provider (with its retries): its Completion, or why it was passed over."""
        breaker = self._breaker(provider)
        limiter = self._rate_limiter() if provider.limits is not None else None
        estimate = provider.estimate_tokens(messages, params)
        deadline = state.started + self.timeout
        tries = 0
        while True:
            if breaker is not None and not await breaker.allow():
                return {"provider": provider.name, "reason": "breaker_open"}
            grant: Grant | None = None
            if limiter is not None:
                try:
                    grant = await self._acquire(limiter, provider, estimate, budget, state)
                except RateLimitWait as exc:
                    after = None if math.isinf(exc.retry_after) else round(exc.retry_after, 3)
                    return {"provider": provider.name, "reason": "rate_limit_wait", "retry_after": after,
                            "limits": list(exc.reasons)}  # fmt: skip
            tries += 1
            state.attempts += 1
            failure: ProviderError | StreamInterrupted | None = None
            try:
                completion = await self._attempt(provider, messages, params, emit, json_mode)
            except (ProviderError, StreamInterrupted) as exc:
                failure = exc
            except BaseException:
                if limiter is not None and grant is not None:
                    await limiter.release(grant)  # always: a cancelled call frees its slot too
                raise
            error = failure.cause if isinstance(failure, StreamInterrupted) else failure
            # Report back in one concurrent burst (~1 round trip): usage, the slot, the breaker.
            reports: list[Awaitable[Any]] = []
            if limiter is not None and grant is not None:
                used = estimate_tokens(messages, 0) if error else completion.tokens_in + completion.tokens_out
                reports += [limiter.settle(grant, used), limiter.release(grant)]
            if breaker is not None:
                healthy = error is None or isinstance(error, RateLimited) or not error.retryable
                reports.append(breaker.record_success() if healthy else breaker.record_failure())
            await asyncio.gather(*reports)
            if failure is None or error is None:
                return completion  # (both or neither are None)
            state.errors.append(error.info())
            if isinstance(failure, StreamInterrupted) or not error.retryable:
                raise failure
            delay = self.retry.delay(tries, error.retry_after)
            if (
                tries >= self.retry.attempts
                or time.monotonic() + delay > deadline
                or (has_next and delay > self.max_wait)
            ):
                return {"provider": provider.name, "reason": "errors", "error": error.info()}
            if delay >= self.wait_notice:
                log(f"{provider.name}: {error.message[:200]}; retrying in {delay:.1f}s", level="warning",
                    provider=provider.name, delay=round(delay, 3))  # fmt: skip
            await asyncio.sleep(delay)

    async def _acquire(
        self, limiter: RateLimiter, provider: Provider, estimate: int, budget: float, state: _CallState
    ) -> Grant:
        assert provider.limits is not None
        limits = provider.limits
        if self.window_margin:
            limits = dataclasses.replace(limits, window_s=limits.window_s + self.window_margin)
        key, ttl = provider.limit_key, max(120.0, 2 * provider.timeout)
        first = await limiter.acquire(key, tokens=estimate, limits=limits, lease_ttl=ttl)
        if isinstance(first, Grant):
            return first
        if first.min_retry_after > budget:
            raise RateLimitWait(key, first.retry_after, first.reasons)
        if first.retry_after >= self.wait_notice:
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

    async def _attempt(
        self,
        provider: Provider,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        emit: Callable[[str], None] | None,
        json_mode: bool,
    ) -> Completion:
        if emit is None:
            return await provider.complete(messages, json_mode=json_mode, **params)
        emitted = 0
        try:
            async with contextlib.aclosing(provider.stream(messages, json_mode=json_mode, **params)) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        return item
                    emit(item)
                    emitted += len(item)
        except ProviderError as exc:
            if emitted:
                raise StreamInterrupted(exc, emitted) from exc
            raise
        raise RuntimeError(f"provider {provider.name} stream ended without a completion")

    def _redis_client(self) -> aioredis.Redis | None:
        if self._redis is None and self._redis_url is not None:
            self._redis = aioredis.Redis.from_url(self._redis_url)
        return self._redis

    def _rate_limiter(self) -> RateLimiter | None:
        if self._limiter is None and (client := self._redis_client()) is not None:
            self._limiter = RateLimiter(client)
        return self._limiter

    def _breaker(self, provider: Provider) -> CircuitBreaker | _LocalBreaker | None:
        settings = self.breaker_settings
        if settings is None:
            return None
        breaker = self._breakers.get(provider.name)
        if breaker is None:
            client = self._redis_client()
            if client is None:
                breaker = _LocalBreaker(settings)
            else:
                breaker = CircuitBreaker(client, provider.name, **settings.__dict__)
            self._breakers[provider.name] = breaker
        return breaker


class LLMCall(Generic[T]):
    """An LLM call made by :meth:`LLM.complete`; await it (once) for its result."""

    __slots__ = ("_call", "_model")

    def __init__(self, call: StepCall[dict[str, Any]], model: type[BaseModel] | None) -> None:
        self._call = call
        self._model = model

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()

    async def _run(self) -> T:
        state = _CallState(response_model=self._model)
        token = _STATE.set(state)
        try:
            raw = await self._call
        finally:
            _STATE.reset(token)
        completion = Completion.model_validate(raw)
        if self._model is not None:
            if state.parsed is not None:
                return state.parsed  # type: ignore[return-value]
            return self._model.model_validate(completion.parsed)  # type: ignore[return-value]
        return completion  # type: ignore[return-value]


class LLMStream:
    """A streaming LLM call made by :meth:`LLM.stream`. Consume it once, either way:

    * ``async for token in stream`` — text deltas as :class:`Token` (a ``str``); afterwards
      ``stream.completion`` holds the :class:`Completion`. If a try is interrupted after some deltas,
      the step retries and the next deltas carry ``try_`` + 1: drop what you kept of the earlier try
      (``stream.text`` is always the final text). A replayed step yields its whole stored text once.
      Leaving the loop early cancels the call; ``async with stream:`` makes that immediate.
    * ``await stream`` — the :class:`Completion` (deltas still reach the run stream in a workflow).
    """

    def __init__(self, call: StepCall[dict[str, Any]]) -> None:
        self._call = call
        self._used = False
        self._task: asyncio.Task[Completion] | None = None
        self.completion: Completion | None = None
        self.replayed = False

    @property
    def text(self) -> str:
        if self.completion is None:
            raise RuntimeError("the stream has not finished")
        return self.completion.text

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("an LLMStream can be consumed only once")
        self._used = True

    async def _run(self, sink: Callable[[Token], None] | None) -> Completion:
        state = _CallState(sink=sink)
        token = _STATE.set(state)
        try:
            raw = await self._call
        finally:
            _STATE.reset(token)
        self.replayed = state.tries == 0
        self.completion = Completion.model_validate(raw)
        return self.completion

    def __await__(self) -> Generator[Any, None, Completion]:
        self._claim()
        return self._run(None).__await__()

    def __aiter__(self) -> AsyncIterator[Token]:
        self._claim()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Token]:
        queue: asyncio.Queue[Token | None] = asyncio.Queue()
        self._task = task = asyncio.ensure_future(self._run(queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield item
            completion = await task
            if self.replayed and completion.text:
                yield Token(completion.text, 1)
        finally:
            await self._cancel()

    async def _cancel(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> LLMStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cancel()
