"""Run ids: 26 characters, Crockford base32, sortable by creation time (ULID layout)."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


def new_run_id() -> str:
    """48 bits of milliseconds then 80 random bits: unique and time-ordered."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def valid_run_id(run_id: str) -> bool:
    """Ids given by users must be short and safe inside a key's hash tag (no braces)."""
    return bool(RUN_ID_PATTERN.match(run_id))
