"""Size limits of what a run stores, decided in one place.

Every event is one Redis stream entry kept for the run's retention and streamed to every
reader, so one event's JSON envelope may hold at most :data:`MAX_EVENT_BYTES`. Whatever a run
copies into its events is sized from that: its input (copied into ``run.queued`` and into the
arguments of the steps it is passed to) must leave :data:`EVENT_HEADROOM` for the envelope and
the other fields, a streamed text chunk is split across output frames, and the error text of a
failure (message and traceback) is capped so that the failure can always be recorded.
"""

from __future__ import annotations

from typing import Final

#: The largest event (its JSON envelope, in bytes) a run's stream accepts.
MAX_EVENT_BYTES: Final = 1 << 20
#: Room an event keeps around a value copied into it (envelope, step ids, other fields).
EVENT_HEADROOM: Final = 64 * 1024
#: The largest run input (its JSON, in bytes): it must fit the events it is copied into.
MAX_INPUT_BYTES: Final = MAX_EVENT_BYTES - EVENT_HEADROOM
#: A JSON string takes at most this many bytes per character (``\u001f`` for control characters).
JSON_BYTES_PER_CHAR: Final = 6
#: Characters kept of an error message, and of a traceback, in events and run records.
MAX_ERROR_MESSAGE_CHARS: Final = 4_000
MAX_TRACEBACK_CHARS: Final = 16_000


def text_piece_chars(max_event_bytes: int = MAX_EVENT_BYTES) -> int:
    """The most characters of streamed text one output frame carries (any text fits it)."""
    return max(1, (max_event_bytes - EVENT_HEADROOM) // JSON_BYTES_PER_CHAR)


def cap_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was (the end is kept with
    ``keep_end``: a traceback's last frames and its exception line matter most)."""
    if len(text) <= limit:
        return text
    if keep_end:
        return f"[{len(text) - limit:,} of {len(text):,} characters cut]…" + text[-limit:]
    return text[:limit] + f"… [cut: {len(text):,} characters in all]"
