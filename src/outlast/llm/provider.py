"""The provider base: one model behind one endpoint, on its official SDK.

A provider makes **one** HTTP request per call — SDK retries are off (``max_retries=0``): the
:class:`~outlast.llm.llm.LLM` retries, falls back and rate-limits. Every SDK error is mapped at
this boundary into :mod:`outlast.llm.errors` (``raise ... from exc``) with the provider's own
message, the HTTP status, whether it is retryable and the ``Retry-After`` it asked for.

Messages are OpenAI-style dicts (``{"role": "system"|"user"|"assistant", "content": ...}``) or a
plain string (one user message). Parameters a provider's SDK does not name (``temperature`` on
newer Anthropic SDKs, vendor extensions) travel in ``extra_body``. The concrete providers are
:class:`~outlast.llm.openai_provider.OpenAIProvider` and
:class:`~outlast.llm.anthropic_provider.AnthropicProvider`.

API keys come from ``api_key=`` or the environment (``api_key_env``, default ``OPENAI_API_KEY`` /
``ANTHROPIC_API_KEY``), are read at the first call, and never appear in ``repr``, logs, step
arguments or traces.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import inspect
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from outlast.errors import ConfigError
from outlast.llm.completion import Completion, Messages, Price, normalize_messages
from outlast.llm.errors import ProviderError, ProviderUnavailable, RateLimited, StreamStalled
from outlast.llm.limits import LimitKey, Limits, estimate_tokens

__all__ = ["Accumulator", "Provider", "parse_retry_after"]


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI) or ``retry-after`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_transport_error(exc: BaseException) -> bool:
    """An httpx/httpcore/h11 error escaping an SDK's stream iteration (a dropped connection)."""
    return any(
        cls.__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "h11"} for cls in type(exc).__mro__
    )


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return str(err["message"])
    return str(getattr(exc, "message", None) or exc)


class Provider(ABC):
    """One model behind one endpoint. ``name`` keys its breaker and (with ``model``) its limits."""

    api_key_env: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        limits: Limits | None = None,
        price: Price | None = None,
        timeout: float = 60.0,
        idle_timeout: float = 30.0,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if not name or not model:
            raise ConfigError("a provider needs a name and a model")
        if timeout <= 0 or idle_timeout <= 0:
            raise ConfigError(f"provider {name!r}: timeout and idle_timeout must be positive")
        self.name = name
        self.model = model
        self.base_url = base_url
        self.limits = limits
        self.price = price
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.extra: dict[str, Any] = dict(extra or {})
        self._api_key = api_key
        self._key_env = api_key_env or self.api_key_env
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        _load_sdk(self.kind)  # import the SDK now (seconds), not inside the first call

    def __repr__(self) -> str:  # never the key
        return f"<{type(self).__name__} {self.name} model={self.model} base_url={self.base_url}>"

    @property
    def limit_key(self) -> LimitKey:
        return LimitKey(self.name, self.model)

    def api_key(self) -> str:
        """The key (explicit, else from the environment). Raises ConfigError when there is none."""
        key = self._api_key or os.environ.get(self._key_env, "")
        if not key:
            raise ConfigError(f"provider {self.name!r}: no API key (pass api_key= or set ${self._key_env})")
        return key

    def estimate_tokens(self, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> int:
        """Tokens to reserve before the call (prompt estimate + the completion allowance)."""
        return estimate_tokens(messages, self._max_tokens({**self.extra, **params}))

    def _max_tokens(self, params: Mapping[str, Any]) -> int | None:
        value = params.get("max_tokens", params.get("max_completion_tokens"))
        return int(value) if value is not None else None

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        return self.price.cost(tokens_in, tokens_out) if self.price else None

    @property
    def _sdk_module(self) -> Any:
        return _load_sdk(self.kind)[0]

    @property
    def _accepted(self) -> frozenset[str]:
        return _load_sdk(self.kind)[1]

    def _sdk(self) -> Any:
        """The SDK client, created on first use in the running event loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._make_client(self.api_key())
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    @abstractmethod
    def _make_client(self, api_key: str) -> Any: ...

    def _split(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Call parameters the SDK names go as keywords, the rest into ``extra_body``."""
        merged = {**self.extra, **params}
        known = {k: v for k, v in merged.items() if k in self._accepted}
        unknown = {k: v for k, v in merged.items() if k not in self._accepted}
        if unknown:
            known["extra_body"] = {**unknown, **(known.get("extra_body") or {})}
        return known

    def map_error(self, exc: BaseException) -> ProviderError | None:
        """The Outlast error for an SDK/transport exception, or None if it is not one."""
        sdk, name, model = self._sdk_module, self.name, self.model
        if isinstance(exc, sdk.APIStatusError):
            status = int(exc.status_code)
            after = parse_retry_after(exc.response.headers)
            message = _status_message(exc)
            if status == 429:
                return RateLimited(message, provider=name, model=model, status=status, retryable=True,
                                   retry_after=after)  # fmt: skip
            if status in (408, 409) or status >= 500:
                return ProviderUnavailable(message, provider=name, model=model, status=status, retryable=True,
                                           retry_after=after)  # fmt: skip
            return ProviderError(message, provider=name, model=model, status=status, retryable=False)
        if isinstance(exc, sdk.APITimeoutError):
            return ProviderUnavailable("request timed out", provider=name, model=model, retryable=True)
        if isinstance(exc, sdk.APIConnectionError):
            message = f"connection error: {exc.__cause__ or exc}"
            return ProviderUnavailable(message, provider=name, model=model, retryable=True)
        if isinstance(exc, sdk.APIResponseValidationError):
            return ProviderError(f"unexpected response: {exc}", provider=name, model=model)
        if isinstance(exc, sdk.APIError):  # e.g. an error event inside a stream
            return ProviderUnavailable(_status_message(exc), provider=name, model=model, retryable=True)
        if _is_transport_error(exc):
            message = f"connection error: {exc!r}"
            return ProviderUnavailable(message, provider=name, model=model, retryable=True)
        return None

    async def complete(self, messages: Messages, *, json_mode: bool = False, **params: Any) -> Completion:
        """One request; the reply's text, usage, model and finish reason."""
        msgs = normalize_messages(messages)
        started = time.monotonic()
        try:
            return self._finish(msgs, await self._request(msgs, params, json_mode), started)
        except Exception as exc:
            mapped = self.map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def stream(
        self, messages: Messages, *, json_mode: bool = False, **params: Any
    ) -> AsyncGenerator[str | Completion, None]:
        """One streaming request: text deltas as they arrive, then the :class:`Completion`.

        A gap of ``idle_timeout`` seconds between chunks closes the connection and raises
        :class:`StreamStalled`. Close the iterator (``contextlib.aclosing``) if you stop early.
        """
        msgs = normalize_messages(messages)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):  # until the response headers arrive
                sdk_stream = await self._open_stream(msgs, params, json_mode)
        except TimeoutError as exc:
            raise ProviderUnavailable(
                "request timed out", provider=self.name, model=self.model, retryable=True
            ) from exc
        except Exception as exc:
            mapped = self.map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        acc = Accumulator(self.model)
        try:
            events = sdk_stream.__aiter__()
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        event = await events.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise StreamStalled(
                        f"no chunk for {self.idle_timeout:g}s", provider=self.name, model=self.model,
                        retryable=True,
                    ) from exc  # fmt: skip
                except Exception as exc:
                    mapped = self.map_error(exc)
                    if mapped is None:
                        raise
                    raise mapped from exc
                delta = self._absorb(acc, event)
                if delta:
                    acc.parts.append(delta)
                    yield delta
        finally:
            await sdk_stream.close()
        yield self._completion(msgs, acc, started)

    @abstractmethod
    async def _request(
        self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool
    ) -> Any: ...

    @abstractmethod
    def _finish(self, msgs: list[dict[str, Any]], response: Any, started: float) -> Completion: ...

    @abstractmethod
    async def _open_stream(
        self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool
    ) -> Any: ...

    @abstractmethod
    def _absorb(self, acc: Accumulator, event: Any) -> str:
        """Record a stream event's metadata in ``acc``; return its text delta ('' if none)."""

    def _completion(self, msgs: list[dict[str, Any]], acc: Accumulator, started: float) -> Completion:
        text = "".join(acc.parts)
        reported = acc.tokens_in is not None and acc.tokens_out is not None
        tokens_in = acc.tokens_in if acc.tokens_in is not None else estimate_tokens(msgs, 0)
        tokens_out = acc.tokens_out if acc.tokens_out is not None else math.ceil(len(text) / 4)
        return Completion(
            text=text, provider=self.name, model=acc.model, system=self.kind, finish_reason=acc.finish,
            tokens_in=tokens_in, tokens_out=tokens_out, usage_reported=reported,
            latency=round(time.monotonic() - started, 6), cost=self.cost(tokens_in, tokens_out),
        )  # fmt: skip


@dataclass
class Accumulator:
    """What a reply's stream (or whole response) told so far: text parts, model, usage, finish."""

    model: str
    finish: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None

    def __post_init__(self) -> None:
        self.parts: list[str] = []


_CREATE = {
    "openai": ("openai.resources.chat.completions", "AsyncCompletions"),
    "anthropic": ("anthropic.resources.messages", "AsyncMessages"),
}


@functools.cache
def _load_sdk(kind: str) -> tuple[Any, frozenset[str]]:
    """The SDK module of a provider kind and the parameter names its ``create`` takes.

    Imported on first use: the SDKs take seconds to import and an app may need only one.
    """
    module, cls = _CREATE[kind]
    create = getattr(importlib.import_module(module), cls).create
    accepted = frozenset(p for p in inspect.signature(create).parameters if p != "self")
    return importlib.import_module(kind), accepted
