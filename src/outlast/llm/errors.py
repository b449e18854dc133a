"""Errors of the LLM layer. SDK errors are mapped into these at the provider boundary.

::

    OutlastError
    └── LLMError
        ├── ProviderError           one provider call failed (``retryable``, ``status``, ``retry_after``)
        │   ├── RateLimited         429 from the provider
        │   └── ProviderUnavailable 5xx, connection error, timeout
        │       └── StreamStalled   no chunk within the idle timeout
        ├── StreamInterrupted       a stream failed after tokens were emitted: the step retries it
        ├── AllProvidersFailed      every provider was tried (or skipped) and none answered
        └── StructuredOutputError   the reply never validated against ``response_model``
"""

from __future__ import annotations

from typing import Any

from outlast.errors import OutlastError


class LLMError(OutlastError):
    """Root of the LLM layer's errors."""


class ProviderError(LLMError):
    """A provider answered with an error, or could not be reached.

    ``retryable``: worth another try (429, 408/409, 5xx, connection errors, timeouts).
    ``status``: the HTTP status, if there was a response. ``retry_after``: seconds the provider
    asked us to wait (``Retry-After``), if it said. The message is the provider's own.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}/{model}: {message}" + (f" (HTTP {status})" if status else ""))
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def info(self) -> dict[str, Any]:
        """A JSON summary for traces."""
        data: dict[str, Any] = {"provider": self.provider, "type": type(self).__name__, "status": self.status}
        data["message"] = self.message[:500]
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 3)
        return data


class RateLimited(ProviderError):
    """The provider refused the call for its rate limits (HTTP 429)."""


class ProviderUnavailable(ProviderError):
    """A server error (5xx), a connection failure or a timeout."""


class StreamStalled(ProviderUnavailable):
    """A streaming response sent no chunk within the provider's ``idle_timeout``."""


class StreamInterrupted(LLMError):
    """A stream failed after some of its tokens were emitted.

    The LLM step raises it so that the *step* retries (``step.retrying``; the next try's output
    frames carry ``try`` + 1 and clients discard the partial output). ``cause`` is the
    :class:`ProviderError` that interrupted it.
    """

    def __init__(self, cause: ProviderError, emitted_chars: int) -> None:
        super().__init__(f"stream interrupted after {emitted_chars} characters: {cause}")
        self.cause = cause
        self.emitted_chars = emitted_chars


class AllProvidersFailed(LLMError):
    """No provider produced an answer. ``errors``/``skipped`` say what happened to each."""

    def __init__(self, errors: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
        parts = []
        for entry in skipped:
            reason = entry["reason"]
            if reason == "errors":
                reason = f"{entry['error']['message']} (HTTP {entry['error']['status']})"
            elif reason == "rate_limit_wait":
                reason = f"no {'/'.join(entry.get('limits', []))} capacity within the wait allowed"
            elif reason == "breaker_open":
                reason = "circuit breaker open"
            parts.append(f"{entry['provider']}: {reason}")
        super().__init__("no LLM provider answered — " + "; ".join(parts or ["no providers"]))
        self.errors = errors
        self.skipped = skipped


class StructuredOutputError(LLMError):
    """The reply did not validate against ``response_model`` after every re-ask."""

    def __init__(self, model_name: str, asks: int, last_error: str, text: str) -> None:
        super().__init__(f"reply did not validate as {model_name} after {asks} asks: {last_error[:500]}")
        self.model_name = model_name
        self.asks = asks
        self.last_error = last_error
        self.text = text
