"""Structured replies (``response_model=``): ask for JSON matching a schema, validate, re-ask.

The model is told to reply with one JSON object that validates against the Pydantic model's JSON
Schema (providers with a JSON mode are also asked for JSON). A reply that fails validation is sent
back with the validation errors, up to ``max_reasks`` times, then
:class:`~outlast.llm.errors.StructuredOutputError` is raised. Tokens and cost add up over the asks.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from outlast.llm.calls import CallState, Request
from outlast.llm.completion import Completion
from outlast.llm.errors import StructuredOutputError
from outlast.llm.routing import Router

__all__ = ["ask_structured", "model_name"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def model_name(model: type[BaseModel]) -> str:
    """The model's import path: what a structured step records instead of the class."""
    return f"{model.__module__}.{model.__qualname__}"


async def ask_structured(
    router: Router,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    model: type[BaseModel],
    max_reasks: int,
    state: CallState,
) -> Completion:
    """The completion whose ``parsed`` validated against ``model`` (the instance goes to
    ``state.parsed``); ``reasks``, tokens and cost cover every ask."""
    schema = json.dumps(model.model_json_schema(), separators=(",", ":"))
    convo = [
        {"role": "system", "content": "Reply with one JSON object and nothing else (no prose, no code "
         f"fences). It must validate against this JSON Schema: {schema}"},
        *messages,
    ]  # fmt: skip
    tokens_in = tokens_out = 0
    cost: float | None = None
    error = ""
    for ask in range(max_reasks + 1):
        reply = await router.execute(Request(convo, params, json_mode=True), state)
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
    raise StructuredOutputError(model.__name__, max_reasks + 1, error, reply.text)
