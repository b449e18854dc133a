"""Chat Completions on the official ``openai`` SDK: OpenAI, or any compatible endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outlast.llm.completion import Completion
from outlast.llm.provider import Accumulator, Provider

__all__ = ["OpenAIProvider"]


class OpenAIProvider(Provider):
    """Chat Completions on the official ``openai`` SDK: OpenAI, or any compatible ``base_url``.

    ``json_mode`` sends ``response_format={"type": "json_object"}``. ``stream_usage`` asks for the
    final usage chunk (``stream_options.include_usage``); turn it off for endpoints that reject it
    (token counts are then estimated).
    """

    api_key_env = "OPENAI_API_KEY"
    kind = "openai"

    def __init__(self, name: str, model: str, *, stream_usage: bool = True, **options: Any) -> None:
        super().__init__(name, model, **options)
        self.stream_usage = stream_usage

    def _make_client(self, api_key: str) -> Any:
        return self._sdk_module.AsyncOpenAI(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def _kwargs(
        self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool
    ) -> dict[str, Any]:
        kwargs = self._split(params)
        if json_mode:
            kwargs.setdefault("response_format", {"type": "json_object"})
        return {**kwargs, "model": self.model, "messages": msgs}

    async def _request(self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool) -> Any:
        return await self._sdk().chat.completions.create(**self._kwargs(msgs, params, json_mode))

    def _finish(self, msgs: list[dict[str, Any]], response: Any, started: float) -> Completion:
        acc = Accumulator(response.model or self.model)
        if response.choices:
            choice = response.choices[0]
            acc.parts.append(choice.message.content or "")
            acc.finish = choice.finish_reason
        if response.usage is not None:
            acc.tokens_in, acc.tokens_out = response.usage.prompt_tokens, response.usage.completion_tokens
        return self._completion(msgs, acc, started)

    async def _open_stream(
        self, msgs: list[dict[str, Any]], params: Mapping[str, Any], json_mode: bool
    ) -> Any:
        kwargs = self._kwargs(msgs, params, json_mode)
        if self.stream_usage:
            kwargs.setdefault("stream_options", {"include_usage": True})
        return await self._sdk().chat.completions.create(**kwargs, stream=True)

    def _absorb(self, acc: Accumulator, event: Any) -> str:
        if event.model:
            acc.model = event.model
        if event.usage is not None:
            acc.tokens_in, acc.tokens_out = event.usage.prompt_tokens, event.usage.completion_tokens
        if not event.choices:
            return ""
        choice = event.choices[0]
        if choice.finish_reason:
            acc.finish = choice.finish_reason
        return str(choice.delta.content or "") if choice.delta else ""
