"""Knobs, deterministic text, token counting, rate limiting and stats for the LLM simulator.

Token counting (used for prompts, completions, usage and the TPM limit alike): one token per
whitespace-separated word — ``count_tokens(text) == len(text.split())``. A prompt costs the
words of every message's text content (text parts of multi-part content are joined), at
least 1. Generated text is made of words, so a completion of ``n`` tokens has ``n`` words and
streams as ``n`` content chunks (``re.findall(r"\\s*\\S+", text)``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from outlast.llm.sim_text import MAX_WORDS, MIN_WORDS, prose_words

WINDOW_SECONDS = 60.0
RECENT_REQUESTS = 100
MIN_COMPLETION_TOKENS = MIN_WORDS
MAX_COMPLETION_TOKENS = MAX_WORDS


class OutageWindow(BaseModel):
    """Every request arriving at epoch second ``t`` with ``start <= t < end`` gets a 503."""

    model_config = ConfigDict(extra="forbid")

    start: float
    end: float

    @model_validator(mode="after")
    def _ordered(self) -> OutageWindow:
        if self.end <= self.start:
            raise ValueError("outage window end must be after its start")
        return self

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


class ThrottleWindow(OutageWindow):
    """Every request arriving in the window gets a 429 saying to retry after ``retry_after`` s."""

    retry_after: float = Field(1.0, gt=0)


class SimKnobs(BaseModel):
    """Live-changeable behaviour of a simulator. Assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ttft_ms: float = Field(0.0, ge=0, description="time to first token, milliseconds")
    tokens_per_second: float = Field(0.0, ge=0, description="output speed; 0 = as fast as possible")
    rpm_limit: int = Field(0, ge=0, description="requests per sliding window; 0 = unlimited")
    tpm_limit: int = Field(0, ge=0, description="prompt+completion tokens per sliding window; 0 = unlimited")
    rate_window_s: float = Field(WINDOW_SECONDS, gt=0, description="the RPM/TPM sliding window, seconds")
    error_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered 500/503")
    outages: list[OutageWindow] = Field(default_factory=list, description="epoch windows of 503s")
    throttles: list[ThrottleWindow] = Field(
        default_factory=list, description="epoch windows of 429s: rate-limit bursts the limits did not cause"
    )
    stall_after_tokens: int = Field(0, ge=0, description="hang after this many tokens; 0 = never")
    stall_requests: int = Field(
        0, ge=0, description="with stall_after_tokens: stall only this many requests (since reset); 0 = all"
    )
    api_keys: list[str] = Field(default_factory=list, description="accepted API keys; empty = any key")
    seed: int = Field(0, description="seeds the text and the error dice")
    request_log: int = Field(RECENT_REQUESTS, ge=0, description="request bodies kept for /admin/requests")
    models: list[str] = Field(default_factory=lambda: ["outlast-sim"], min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    def apply(self, patch: dict[str, Any]) -> None:
        """Validate ``patch`` against the whole model, then update this object in place.

        Raises :class:`pydantic.ValidationError` (nothing is changed) on a bad value or key.
        """
        merged = SimKnobs.model_validate({**self.model_dump(), **patch})
        for name in patch:
            setattr(self, name, getattr(merged, name))


# --------------------------------------------------------------------------- text & tokens


def count_tokens(text: str) -> int:
    """The simulator's token estimate: whitespace-separated words."""
    return len(text.split())


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return max(1, sum(count_tokens(message_text(m)) for m in messages))


def completion_words(seed: int, model: str, messages: list[dict[str, Any]]) -> list[str]:
    """16–64 deterministic words of prose about the prompt (see :mod:`.sim_text`)."""
    return prose_words(seed, model, messages)


def render_completion(words: list[str], limit: int | None, json_mode: bool) -> tuple[str, str]:
    """Return (text, finish_reason) for ``words`` cut to ``limit`` tokens.

    In JSON mode the text is the compact object ``{"answer":"w1 … wn"}``: still ``n`` tokens.
    """
    finish = "stop"
    if limit is not None and limit < len(words):
        words, finish = words[:limit], "length"
    elif words and not words[-1].endswith("."):
        words = [*words[:-1], words[-1] + "."]
    text = " ".join(words)
    if json_mode:
        text = json.dumps({"answer": text}, separators=(",", ":"))
    return text, finish


def token_pieces(text: str) -> list[str]:
    """Split ``text`` into streamable tokens (each keeps its leading whitespace)."""
    return re.findall(r"\s*\S+", text)


# --------------------------------------------------------------------------- wire format

FINGERPRINT = "fp_outlast_sim"


class ChatRequest(BaseModel):
    """The part of an OpenAI chat request the simulator reads; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None


@dataclass
class Plan:
    """One accepted request's answer, fixed before any byte is sent."""

    id: str
    model: str
    pieces: list[str]
    finish: str
    prompt_tokens: int
    ttft: float
    tps: float
    stall_after: int
    created: int = field(default_factory=lambda: int(time.time()))

    def usage(self) -> dict[str, int]:
        n = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": "".join(self.pieces), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}
        return {**self._envelope("chat.completion", [choice]), "usage": self.usage()}

    def chunk(self, delta: dict[str, Any], finish: str | None, include_usage: bool) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = self._envelope("chat.completion.chunk", [choice])
        return {**body, "usage": None} if include_usage else body

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk", []), "usage": self.usage()}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


# --------------------------------------------------------------------------- rate limiting


def format_reset(seconds: float) -> str:
    """OpenAI-style duration: ``"250ms"``, ``"12.5s"``, ``"1m0s"``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


@dataclass
class Admission:
    allowed: bool
    headers: dict[str, str]
    kind: str = ""  # "requests" | "tokens" when refused
    retry_after: float = 0.0
    message: str = ""


@dataclass
class RateLimiter:
    """Sliding 60 s window of (arrival, tokens) for every admitted request."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def clear(self) -> None:
        self.entries.clear()

    def admit(self, now: float, tokens: int, rpm: int, tpm: int, window: float = WINDOW_SECONDS) -> Admission:
        while self.entries and self.entries[0][0] <= now - window:
            self.entries.popleft()
        used_requests = len(self.entries)
        used_tokens = sum(t for _, t in self.entries)
        refusal: Admission | None = None
        if rpm and used_requests + 1 > rpm:
            wait = self.entries[used_requests - rpm][0] + window - now
            msg = f"Rate limit reached on requests per min (RPM): Limit {rpm}, Used {used_requests}."
            refusal = Admission(False, {}, "requests", wait, msg)
        elif tpm and used_tokens + tokens > tpm:
            wait, freed = window, 0
            if tokens <= tpm:
                for arrival, spent in self.entries:
                    freed += spent
                    if used_tokens - freed + tokens <= tpm:
                        wait = arrival + window - now
                        break
            msg = (
                f"Rate limit reached on tokens per min (TPM): Limit {tpm}, Used {used_tokens}, "
                f"Requested {tokens}."
            )
            refusal = Admission(False, {}, "tokens", wait, msg)
        if refusal is None:
            self.entries.append((now, tokens))
            used_requests, used_tokens = used_requests + 1, used_tokens + tokens
        reset = (self.entries[-1][0] + window - now) if self.entries else 0.0
        headers: dict[str, str] = {}
        if rpm:
            headers["x-ratelimit-limit-requests"] = str(rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, rpm - used_requests))
            headers["x-ratelimit-reset-requests"] = format_reset(reset)
        if tpm:
            headers["x-ratelimit-limit-tokens"] = str(tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, tpm - used_tokens))
            headers["x-ratelimit-reset-tokens"] = format_reset(reset)
        if refusal is None:
            return Admission(True, headers)
        refusal.headers = headers
        retry = max(1, math.ceil(refusal.retry_after))
        headers["retry-after"] = str(retry)
        headers["retry-after-ms"] = str(max(1, math.ceil(refusal.retry_after * 1000)))
        refusal.message += f" Please try again in {retry}s."
        return refusal


# --------------------------------------------------------------------------- stats


class SimStats:
    """Thread-safe counters (the server thread writes, tests and benches read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._by_status: Counter[int] = Counter()
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._accepted: list[float] = []
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        self._refused = Counter[str]()  # why a request got a 429: "limit" (RPM/TPM) or "throttle"

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self._total = 0
            self._by_status.clear()
            self._prompt_tokens = self._completion_tokens = 0
            self._accepted.clear()
            self._refused.clear()

    def request(self) -> None:
        with self._lock:
            self._total += 1

    def record_body(self, api: str, body: Any, keep: int = RECENT_REQUESTS) -> dict[str, Any]:
        """Keep a request body (never its headers, so never its key) for ``recent()``; the last
        ``keep`` are kept. The entry gets the response's ``status`` once it is known."""
        entry: dict[str, Any] = {"api": api, "body": body, "at": time.time(), "status": None}
        with self._lock:
            if self._recent.maxlen != keep:
                self._recent = deque(self._recent, maxlen=keep)
            self._recent.append(entry)
        return entry

    def refused(self, why: str) -> None:
        """Count a 429: ``"limit"`` (the RPM/TPM window) or ``"throttle"`` (a throttle window)."""
        with self._lock:
            self._refused[why] += 1

    def recent(self) -> list[dict[str, Any]]:
        """The last requests received, oldest first: ``api``, ``body``, ``at`` (epoch seconds of
        arrival) and ``status`` (the response's, None while it is being answered)."""
        with self._lock:
            return [dict(entry) for entry in self._recent]

    def status(self, code: int, entry: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._by_status[code] += 1
            if entry is not None:
                entry["status"] = code

    def accepted(self, arrival: float) -> None:
        with self._lock:
            self._accepted.append(arrival)

    def tokens(self, prompt: int = 0, completion: int = 0) -> None:
        with self._lock:
            self._prompt_tokens += prompt
            self._completion_tokens += completion

    def max_in_window(self, seconds: float) -> int:
        """The most accepted requests that arrived within any ``seconds``-long window."""
        with self._lock:
            arrivals = sorted(self._accepted)
        best, lo = 0, 0
        for hi, t in enumerate(arrivals):
            while t - arrivals[lo] >= seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            arrivals = sorted(self._accepted)
            best, lo = 0, 0
            for hi, t in enumerate(arrivals):
                while t - arrivals[lo] >= WINDOW_SECONDS:
                    lo += 1
                best = max(best, hi - lo + 1)
            return {
                "total_requests": self._total,
                "requests_by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "accepted_requests": len(arrivals),
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "tokens_served": self._completion_tokens,
                "max_requests_in_any_60s_window": best,
                "rate_limited_requests": self._refused["limit"],
                "throttled_requests": self._refused["throttle"],
            }
