"""Every error Outlast raises on purpose derives from :class:`OutlastError`.

::

    OutlastError
    ├── ConfigError                 bad settings, unusable options
    ├── SerializationError          a value that cannot be stored as JSON
    ├── InputValidationError        a workflow input that fails its schema
    │   └── InputRejected           a supplied input that fails its wait's schema
    ├── NotWaiting                  input for a key the run is not waiting for
    ├── InputTimeout                wait_for_input's deadline passed (raised in the workflow)
    ├── WorkflowNotFound            no workflow registered under a name
    ├── RunNotFound                 no run with that id (or not visible to the tenant)
    ├── NonDeterminismError         replayed code diverged from the recorded steps
    ├── StoreError                  the durable store failed (mapped from redis errors)
    │   ├── StoreUnavailable        cannot reach the server / server failed to start
    │   ├── StaleAttemptError       a write fenced off: another attempt owns the run
    │   ├── RunEnded                a run that already ended was asked for another attempt or event
    │   ├── RunWaiting              a suspended run was asked for an attempt before its wait settled
    │   └── ProtocolViolation       a write broke the event-log invariants (a bug)
    ├── RunFailed                   awaiting a run's result when the run failed
    │   └── ChildFailed             a child run awaited by its parent failed or was cancelled
    ├── ClientError                 the HTTP API answered an error (outlast.client.errors)
    ├── RateLimitWait               no fleet-wide capacity within max_wait (outlast.llm.limits)
    └── LLMError                    the LLM layer (outlast.llm.errors)
        ├── ProviderError           a provider answered an error (status, retryable, retry_after)
        │   ├── RateLimited         429
        │   └── ProviderUnavailable 5xx, connection errors, timeouts
        │       └── StreamStalled   no chunk within the idle timeout
        ├── StreamInterrupted       a stream failed after tokens were sent (the step retries)
        ├── AllProvidersFailed      every provider failed or was skipped
        └── StructuredOutputError   the answer never matched response_model

Errors from redis-py are mapped at the store boundary with ``raise ... from exc`` so
callers only need to catch this tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OutlastError(Exception):
    """Root of every error Outlast raises on purpose."""


class ConfigError(OutlastError):
    """A setting or decorator option is invalid."""


class SerializationError(OutlastError):
    """A value (argument, result, event payload) cannot be encoded as JSON."""


class InputValidationError(OutlastError):
    """A workflow input does not match the workflow's input schema.

    ``errors`` holds pydantic-style error dicts (``loc``, ``msg``, ``type``).
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class InputRejected(InputValidationError):
    """A value supplied to a waiting run does not match the schema of its input request."""

    def __init__(self, message: str, where: str, problem: str) -> None:
        super().__init__(message, [{"loc": where, "msg": problem, "type": "schema"}])
        self.where = where


class NotWaiting(OutlastError):
    """Input was supplied for a key the run is not waiting for (nothing was changed)."""

    def __init__(self, run_id: str, key: str, status: str, waiting_for: list[str]) -> None:
        pending = ", ".join(waiting_for) if waiting_for else "nothing"
        super().__init__(f"run {run_id} ({status}) is not waiting for input {key!r}; it waits for {pending}")
        self.run_id = run_id
        self.key = key
        self.status = status
        self.waiting_for = waiting_for


class InputTimeout(OutlastError):
    """``wait_for_input`` reached its deadline without input (and no default was given)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no input {key!r} arrived before the deadline")
        self.key = key


class WorkflowNotFound(OutlastError):
    """No workflow is registered under the requested name."""


class RunNotFound(OutlastError):
    """No run exists with the requested id."""


class NonDeterminismError(OutlastError):
    """Replayed workflow code called a different step than the one recorded at a position."""

    def __init__(self, step_id: str, message: str) -> None:
        super().__init__(f"non-deterministic replay at step {step_id!r}: {message}")
        self.step_id = step_id


class StoreError(OutlastError):
    """The durable store failed."""


class StoreUnavailable(StoreError):
    """The Redis-compatible server cannot be reached or started."""


class StaleAttemptError(StoreError):
    """A write was refused because a newer attempt owns the run (the fence moved on)."""

    def __init__(self, run_id: str, attempt: int, current: int) -> None:
        super().__init__(f"run {run_id}: attempt {attempt} is stale, attempt {current} owns the run")
        self.run_id = run_id
        self.attempt = attempt
        self.current = current


class RunEnded(StoreError):
    """The run already ended: no new attempt may start and no event may follow its terminal one."""

    def __init__(self, run_id: str, status: str = "") -> None:
        super().__init__(f"run {run_id} already ended" + (f" ({status})" if status else ""))
        self.run_id = run_id
        self.status = status


class RunWaiting(StoreError):
    """The run is suspended (``waiting``): it is queued again once one of its waits is settled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is waiting; it is queued again once its wait is settled")
        self.run_id = run_id


class ProtocolViolation(StoreError):
    """A write broke an invariant of the event log (for example a gap in seq numbers)."""


class RunFailed(OutlastError):
    """The awaited run ended failed or cancelled."""

    def __init__(self, run_id: str, status: str, error: Mapping[str, Any] | None) -> None:
        detail = (error or {}).get("message", "")
        super().__init__(f"run {run_id} {status}" + (f": {detail}" if detail else ""))
        self.run_id = run_id
        self.status = status
        self.error: dict[str, Any] = dict(error or {})


class ChildFailed(RunFailed):
    """A child run the parent waited for did not complete."""
