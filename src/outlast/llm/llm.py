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
its result is the :class:`~outlast.llm.completion.Completion` (provider, model, tokens in/out,
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
   provider is up and counts as a success). A half-open breaker admits a probe that restores it;
   a probe that spills over (or is cancelled) hands its slot back at once.

**Streams.** A chunk gap of ``provider.idle_timeout`` is a stall. A failure *before* any delta was
emitted is retried as above. A failure *after* deltas were emitted raises
:class:`~outlast.llm.errors.StreamInterrupted` out of the step's try, so the step itself retries
(``step.retrying``; the next try's ``output`` frames carry ``try`` + 1, and clients discard the
partial output as docs/protocol.md §6 says), up to ``retry.stream_attempts`` tries.

**Without redis** there are no fleet-wide rate limits (``Limits`` are ignored; providers' own 429s
are still honoured and can spill over) and each provider's breaker is kept in this process
(consecutive-failure rule only).

Where it lives: provider order and spill-over in :mod:`.routing`, one provider's requests, retries
and breaker/limit bookkeeping in :mod:`.calls`, ``response_model`` re-asks in :mod:`.structured`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

from outlast import serde
from outlast.core.component import Component, StepCall
from outlast.core.context import current_frame
from outlast.core.emit import output
from outlast.core.retry import Retry
from outlast.errors import ConfigError
from outlast.llm.breaker import BreakerSettings
from outlast.llm.calls import CallState, LLMRetry, Request, Token
from outlast.llm.completion import Completion, Messages, normalize_messages
from outlast.llm.errors import StreamInterrupted
from outlast.llm.provider import Provider
from outlast.llm.routing import DEFAULT_BREAKER, Router
from outlast.llm.structured import ask_structured, model_name
from outlast.store.client import RedisClient

__all__ = ["LLM", "LLMCall", "LLMStream"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_STATE: ContextVar[CallState | None] = ContextVar("outlast_llm_call", default=None)


def completion_usage(result: Any) -> dict[str, Any] | None:
    """The tokens and cost an LLM step's result (a dumped :class:`Completion`) records."""
    if not isinstance(result, dict):
        return None
    return {
        "tokens_in": int(result.get("tokens_in") or 0),
        "tokens_out": int(result.get("tokens_out") or 0),
        "cost": result.get("cost"),
    }


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, StreamInterrupted)


class LLM(Router):
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
        redis: RedisClient | str | None = None,
        name: str = "llm",
        max_wait: float = 5.0,
        timeout: float = 300.0,
        retry: LLMRetry | None = None,
        breaker: BreakerSettings | None = DEFAULT_BREAKER,
        wait_notice: float = 2.0,
        max_reasks: int = 2,
        window_margin: float = 0.5,
    ) -> None:
        if max_reasks < 0:
            raise ConfigError("LLM: max_reasks must be >= 0")
        super().__init__(
            providers, redis=redis, max_wait=max_wait, timeout=timeout, retry=retry, breaker=breaker,
            wait_notice=wait_notice, window_margin=window_margin,
        )  # fmt: skip
        self.name = name
        self.max_reasks = max_reasks
        step_retry = Retry(
            attempts=self.retry.stream_attempts, retry_on=_interrupted, backoff=1.0,
            backoff_base=self.retry.stream_backoff, jitter=self.retry.jitter,
        )  # fmt: skip
        self._component: Component[..., dict[str, Any]] = Component(
            self._step, name=name, retry=step_retry, usage=completion_usage
        )

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
        name = model_name(response_model) if response_model is not None else None
        call = self._component(*self._args(messages, params), False, name)
        return LLMCall(call, response_model)

    def stream(self, messages: Messages, **params: Any) -> LLMStream:
        """One streaming call: ``async for token in ...`` yields :class:`Token` deltas, ``await ...``
        returns the :class:`Completion`. See :class:`LLMStream`."""
        return LLMStream(self._component(*self._args(messages, params), True, None))

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
        state.runs += 1
        frame = current_frame.get()
        emit: Callable[[str], None] | None = None
        if frame is not None:
            for provider in self.providers:  # mask keys wherever they might surface (error texts)
                with contextlib.suppress(ConfigError):
                    frame.ctx.secrets.add(provider.api_key())
        if stream:
            # In a run the step machinery numbers the tries; a plain call (no frame) retries the
            # same way, so its own count of this body's runs is the try number.
            sink, try_ = state.sink, frame.tries if frame is not None else state.runs

            def emit(delta: str) -> None:
                output(delta)
                if sink is not None:
                    sink(Token(delta, try_))

        if state.response_model is not None:
            completion = await ask_structured(
                self, messages, params, state.response_model, self.max_reasks, state
            )
        else:
            completion = await self.execute(Request(messages, params, emit), state)
        return completion.model_dump(mode="json")


class LLMCall(Generic[T]):
    """An LLM call made by :meth:`LLM.complete`; await it (once) for its result."""

    __slots__ = ("_call", "_model")

    def __init__(self, call: StepCall[dict[str, Any]], model: type[BaseModel] | None) -> None:
        self._call = call
        self._model = model

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()

    async def _run(self) -> T:
        state = CallState(response_model=self._model)
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
        state = CallState(sink=sink)
        token = _STATE.set(state)
        try:
            raw = await self._call
        finally:
            _STATE.reset(token)
        self.replayed = state.runs == 0
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
