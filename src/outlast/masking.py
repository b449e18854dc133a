"""Masking of secret values in everything that reaches the stream or a trace.

A component's ``secret_args`` are replaced by ``"[secret]"``; any string of 8 or more
characters equal to a known secret value is replaced too, and so is any occurrence of such
a secret inside a longer string.
"""

from __future__ import annotations

from typing import Any

MASK = "[secret]"
MIN_SECRET_LENGTH = 8


class Secrets:
    """The secret values seen so far in one run (kept in memory only, never stored)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            self.values.add(value)

    def mask(self, value: Any) -> Any:
        """``value`` (jsonable) with every secret replaced; returned unchanged when none is known."""
        if not self.values:
            return value
        return _mask(value, self.values)


def _mask(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        if value in secrets:
            return MASK
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_mask(key, secrets): _mask(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, secrets) for item in value]
    return value
