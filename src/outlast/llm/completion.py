"""What an LLM call takes and returns: :data:`Messages`, :class:`Completion` and :class:`Price`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["Completion", "Messages", "Price", "normalize_messages"]

Messages = str | Sequence[Mapping[str, Any]]
"""A prompt: OpenAI-style message dicts, or a string taken as one user message."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens; used for the estimated cost recorded with each call."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return round((tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6, 8)


class Completion(BaseModel):
    """A finished call: the text and what it took. This is what an LLM step records as its result.

    ``provider`` served it (after ``fallbacks`` were passed over); ``attempts`` counts HTTP requests
    across providers, retries and re-asks; ``errors`` lists the failed requests; ``latency`` is the
    whole call in seconds, ``waited`` the part spent waiting for rate-limit capacity; ``cost`` is
    estimated from the provider's :class:`Price` (``None`` without one). ``usage_reported`` is false
    when the provider sent no usage and the token counts are estimates. ``parsed`` holds the
    validated JSON of a structured (``response_model``) call. ``system`` is the provider's API
    family (``openai``, ``anthropic``): OpenTelemetry's ``gen_ai.system``.
    """

    text: str
    provider: str
    model: str
    system: str = ""
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    usage_reported: bool = True
    latency: float = 0.0
    attempts: int = 1
    fallbacks: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    waited: float = 0.0
    cost: float | None = None
    parsed: Any = None
    reasks: int = 0


def normalize_messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]
