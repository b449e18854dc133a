"""Retry policy of a component: exponential backoff with jitter, bounded attempts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from outlast.errors import ConfigError, NonDeterminismError, SerializationError

#: Errors that are bugs or fences, never worth another attempt.
NEVER_RETRY: tuple[type[BaseException], ...] = (NonDeterminismError, SerializationError)


@dataclass(frozen=True)
class Retry:
    """How a component retries.

    ``attempts`` counts every try (1 = no retry). The delay before try ``n + 1`` is
    ``backoff_base * backoff ** (n - 1)`` seconds, capped at ``max_delay``; with ``jitter`` a
    uniformly random fraction of it ("full jitter"), so a fleet does not retry in lockstep.
    ``retry_on`` is a tuple of exception types or a predicate taking the exception.
    """

    attempts: int = 3
    backoff: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,)
    backoff_base: float = 0.5
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"Retry(attempts={self.attempts}): attempts must be at least 1")
        if self.backoff < 1:
            raise ConfigError(f"Retry(backoff={self.backoff}): backoff must be at least 1")
        if self.max_delay < 0 or self.backoff_base < 0:
            raise ConfigError("Retry: delays must not be negative")

    def should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, NEVER_RETRY):
            return False
        if callable(self.retry_on) and not isinstance(self.retry_on, tuple):
            return bool(self.retry_on(exc))
        return isinstance(exc, self.retry_on)

    def delay(self, failed_tries: int) -> float:
        """Seconds to wait after ``failed_tries`` failed tries (1-based)."""
        raw = min(self.max_delay, self.backoff_base * self.backoff ** (failed_tries - 1))
        return self._rng.uniform(0, raw) if self.jitter else raw


NO_RETRY = Retry(attempts=1)
