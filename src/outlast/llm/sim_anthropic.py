"""The Anthropic Messages API wire format of the LLM simulator (``POST /v1/messages``).

Same behaviour as the chat endpoint (text, tokens, limits, errors, outages, stalls — see
:mod:`outlast.llm.simulator`), spoken the way the official ``anthropic`` SDK expects: a
``message`` object, or with ``stream: true`` the event sequence ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` per token, ``content_block_stop``,
``message_delta`` (stop reason, output tokens) and ``message_stop``. Errors are
``{"type": "error", "error": {"type": ..., "message": ...}}``. The system prompt counts as a
leading system message for the deterministic text and the token counts, so one conversation
gets the same reply from both endpoints.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from outlast.llm.sim_knobs import Plan

_STOP = {"stop": "end_turn", "length": "max_tokens"}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


class MessagesRequest(BaseModel):
    """The part of a Messages API request the simulator reads; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False

    def chat_messages(self) -> list[dict[str, Any]]:
        """The conversation with the system prompt as a leading system message."""
        if not self.system:
            return list(self.messages)
        return [{"role": "system", "content": self.system}, *self.messages]


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def message(
    plan: Plan, content: list[dict[str, Any]], stop: str | None, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": plan.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": output_tokens},
    }


def full_message(plan: Plan) -> dict[str, Any]:
    text = "".join(plan.pieces)
    return message(
        plan, [{"type": "text", "text": text}], _STOP.get(plan.finish, plan.finish), len(plan.pieces)
    )


def start_events(plan: Plan) -> list[bytes]:
    return [
        event("message_start", {"type": "message_start", "message": message(plan, [], None, 1)}),
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        event("ping", {"type": "ping"}),
    ]


def delta_event(piece: str) -> bytes:
    delta = {"type": "text_delta", "text": piece}
    return event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})


def end_events(plan: Plan) -> list[bytes]:
    stop = _STOP.get(plan.finish, plan.finish)
    return [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": len(plan.pieces)},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
