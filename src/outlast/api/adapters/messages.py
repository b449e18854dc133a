"""Chat workflows: the clients' message shapes → the chat-completions ``messages`` a workflow takes.

A *chat workflow* is one whose input has a ``messages`` property: a list of
``{"role": "system" | "user" | "assistant" | "tool", "content": str}`` (what :mod:`outlast.llm`
takes). Its streamed text output is the assistant's reply. The AI SDK's UI messages (``parts``)
and AG-UI's messages are converted to that shape here, so one workflow serves both protocols.
"""

from __future__ import annotations

from typing import Any, Literal

from ag_ui.core import Message as AgUiMessage
from pydantic import BaseModel, ConfigDict, Field

from outlast.api.errors import ApiError

ChatMessage = dict[str, str]


class UIMessage(BaseModel):
    """One AI SDK ``UIMessage`` (only what the conversion reads is declared)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(max_length=256)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


def _abandoned(part: dict[str, Any]) -> bool:
    meta = part.get("providerMetadata")
    outlast = meta.get("outlast") if isinstance(meta, dict) else None
    return isinstance(outlast, dict) and bool(outlast.get("abandoned"))


def from_ui_messages(messages: list[UIMessage]) -> list[ChatMessage]:
    """Each message's text parts joined (abandoned ones left out: a failed try's text is not part
    of the conversation); other parts (data, files, steps, tools) are not text and are dropped,
    and so is a message left with no text."""
    out: list[ChatMessage] = []
    for message in messages:
        text = "".join(
            str(part.get("text", ""))
            for part in message.parts
            if part.get("type") == "text" and not _abandoned(part)
        )
        if text:
            out.append({"role": message.role, "content": text})
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal user content: its text parts
        return "".join(
            str(getattr(part, "text", "")) for part in content if getattr(part, "type", "") == "text"
        )
    return ""


def from_ag_ui_messages(messages: list[AgUiMessage]) -> list[ChatMessage]:
    """AG-UI messages: ``developer`` becomes ``system``; a tool message keeps its ``tool_call_id``;
    reasoning and activity messages are not part of the conversation."""
    out: list[ChatMessage] = []
    for message in messages:
        role = getattr(message, "role", "")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            continue
        item = {"role": "system" if role == "developer" else role, "content": _content_text(message.content)}
        if role == "tool":
            item["tool_call_id"] = str(getattr(message, "tool_call_id", ""))
        if item["content"] or role == "tool":
            out.append(item)
    return out


def require_chat_workflow(name: str, schema: dict[str, Any]) -> None:
    """422 unless the workflow's input has ``messages`` (what makes it a chat workflow)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or "messages" not in properties:
        raise ApiError(
            422,
            "not_a_chat_workflow",
            f"workflow {name!r} is not a chat workflow: its input has no 'messages' "
            '(declare a parameter messages: list[dict[str, str]] holding {"role", "content"} items)',
        )
