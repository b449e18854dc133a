"""The Messages API on the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outlast.errors import ConfigError
from outlast.llm.completion import Completion
from outlast.llm.provider import Accumulator, Provider

__all__ = ["AnthropicProvider"]


_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class AnthropicProvider(Provider):
    """The Messages API on the official ``anthropic`` SDK.

    ``base_url`` is the API root (the SDK appends ``/v1/messages``). ``max_tokens`` (required by
    the API) defaults to ``max_tokens=`` of the provider. System messages become ``system``;
    ``stop`` becomes ``stop_sequences``. There is no JSON mode: structured output relies on the
    schema instructions the LLM adds, validation and re-asks. Finish reasons are mapped to
    OpenAI's (``end_turn`` → ``stop``, ``max_tokens`` → ``length``).
    """

    api_key_env = "ANTHROPIC_API_KEY"
    kind = "anthropic"

    def __init__(self, name: str, model: str, *, max_tokens: int = 1024, **options: Any) -> None:
        super().__init__(name, model, **options)
        if max_tokens < 1:
            raise ConfigError(f"provider {name!r}: max_tokens must be >= 1")
        self.max_tokens = max_tokens

    def _max_tokens(self, params: Mapping[str, Any]) -> int | None:
        value = super()._max_tokens(params)
        return self.max_tokens if value is None else value

    def _make_client(self, api_key: str) -> Any:
        return self._sdk_module.AsyncAnthropic(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def _kwargs(self, msgs: list[dict[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self.extra, **params}
        if "stop" in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        limit = self._max_tokens(params)
        params.pop("max_completion_tokens", None)
        kwargs = self._split(params)
        kwargs["max_tokens"] = limit
        system = [str(m.get("content") or "") for m in msgs if m.get("role") == "system"]
        if system:
            joined = "\n\n".join(system)
            kwargs["system"] = f"{kwargs['system']}\n\n{joined}" if kwargs.get("system") else joined
        chat = [m for m in msgs if m.get("role") != "system"]
        return {**kwargs, "model": self.model, "messages": chat}

    async def _request(self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool) -> Any:
        return await self._sdk().messages.create(**self._kwargs(msgs, params))

    def _finish(self, msgs: list[dict[str, Any]], response: Any, started: float) -> Completion:
        acc = Accumulator(response.model or self.model)
        acc.parts.extend(b.text for b in response.content if getattr(b, "type", "") == "text")
        acc.finish = _ANTHROPIC_FINISH.get(response.stop_reason or "", response.stop_reason)
        acc.tokens_in, acc.tokens_out = response.usage.input_tokens, response.usage.output_tokens
        return self._completion(msgs, acc, started)

    async def _open_stream(
        self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool
    ) -> Any:
        return await self._sdk().messages.create(**self._kwargs(msgs, params), stream=True)

    def _absorb(self, acc: Accumulator, event: Any) -> str:
        kind = event.type
        if kind == "message_start":
            acc.model = event.message.model or acc.model
            acc.tokens_in = event.message.usage.input_tokens
        elif kind == "content_block_delta" and event.delta.type == "text_delta":
            return str(event.delta.text)
        elif kind == "message_delta":
            reason = event.delta.stop_reason
            acc.finish = _ANTHROPIC_FINISH.get(reason or "", reason)
            acc.tokens_out = event.usage.output_tokens
        return ""
