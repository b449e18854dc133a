"""Checks shared by the adapter tests."""

from __future__ import annotations

from typing import Any

from outlast.api.adapters.ui_message import UIMessageTranslator
from outlast.events import Event


def ui_parts(events: list[Event], run_id: str | None = None) -> list[dict[str, Any]]:
    translator = UIMessageTranslator(run_id or events[0].run_id)
    return [part for e in events for part in translator.translate(e.model_dump())]


def assemble(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Applies the UI message stream rules a consumer enforces (text deltas only into an open
    part; ``finish-step`` forgets every open part) and returns the message's parts."""
    message: dict[str, Any] = {"parts": []}
    active: dict[str, dict[str, Any]] = {}
    for part in parts:
        kind = part["type"]
        if kind == "start":
            message["id"] = part["messageId"]
        elif kind == "text-start":
            assert part["id"] not in active, f"text part {part['id']} opened twice"
            active[part["id"]] = {
                "type": "text",
                "text": "",
                "providerMetadata": part.get("providerMetadata"),
            }
            message["parts"].append(active[part["id"]])
        elif kind == "text-delta":
            assert part["id"] in active, f"delta for a text part that is not open: {part}"
            active[part["id"]]["text"] += part["delta"]
        elif kind == "text-end":
            assert part["id"] in active, f"end of a text part that is not open: {part}"
            if part.get("providerMetadata"):
                active[part["id"]]["providerMetadata"] = part["providerMetadata"]
            del active[part["id"]]
        elif kind == "finish-step":
            assert not active, f"finish-step while text parts are open: {list(active)}"
        elif kind == "start-step":
            message["parts"].append({"type": "step-start"})
        elif kind.startswith("data-") and not part.get("transient"):
            same = [
                p
                for p in message["parts"]
                if "id" in part and p.get("id") == part["id"] and p["type"] == kind
            ]
            if same:
                same[0]["data"] = part["data"]
            else:
                message["parts"].append(dict(part))
    assert not active, f"text parts never closed: {list(active)}"
    return message


def live_text(message: dict[str, Any]) -> str:
    """The message's text without abandoned parts (what a chat UI shows as the answer)."""
    return "".join(
        p["text"]
        for p in message["parts"]
        if p["type"] == "text"
        and not ((p.get("providerMetadata") or {}).get("outlast") or {}).get("abandoned")
    )
