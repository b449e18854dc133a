"""JSON encoding of everything Outlast stores: arguments, results, event payloads.

Values go through pydantic so models, dataclasses, datetimes, enums and UUIDs encode the
way users expect; anything else is a :class:`~outlast.errors.SerializationError` that names
what could not be encoded. Nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pydantic_core

from outlast.errors import SerializationError


def to_jsonable(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (dict, list, str, int, float, bool, None)."""
    try:
        return pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serialisable ({type(value).__name__}): {exc}; "
            "use JSON types, pydantic models or dataclasses"
        ) from exc


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of an already-jsonable value."""
    return pydantic_core.to_json(value)


def loads(data: bytes | str) -> Any:
    return json.loads(data)


def stable_hash(value: Any) -> str:
    """A short, stable hash of a jsonable value (key order does not matter)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fast_hash(value: Any) -> str:
    """A short hash of a jsonable value's JSON text (key order matters: it is the call's order)."""
    return hashlib.blake2b(pydantic_core.to_json(value), digest_size=8).hexdigest()
