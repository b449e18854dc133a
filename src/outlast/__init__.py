"""Outlast: durable, streaming workflows for long-running AI apps.

Components are checkpointed steps; workflows compose them and survive crashes by replaying
completed steps from their stored results; every event flows through the run's stream.
"""

from outlast.core.component import Component, StepCall, component
from outlast.core.emit import emit, log, output, progress, publish, status
from outlast.core.gather import gather
from outlast.core.retry import Retry
from outlast.core.runner import Attempt, LocalRun, Outcome, Runner, run_local
from outlast.core.waiting import ChildRun, run_child, sleep, start_child, wait_for_input
from outlast.core.workflow import Registry, Workflow, workflow
from outlast.errors import (
    ChildFailed,
    ConfigError,
    InputRejected,
    InputTimeout,
    InputValidationError,
    NonDeterminismError,
    NotWaiting,
    OutlastError,
    ProtocolViolation,
    RunEnded,
    RunFailed,
    RunNotFound,
    RunWaiting,
    SerializationError,
    StaleAttemptError,
    StoreError,
    StoreUnavailable,
    WorkflowNotFound,
)
from outlast.events import Event
from outlast.store.connect import connect
from outlast.store.memory import MemoryStore
from outlast.store.redis import RedisStore

__version__ = "0.1.0"

_CLIENT_EXPORTS = frozenset({"AsyncClient", "Client", "ClientError", "Run"})


def __getattr__(name: str) -> object:
    """The HTTP client is imported on first use, so ``import outlast`` does not load httpx."""
    if name in _CLIENT_EXPORTS:
        from outlast import client

        return getattr(client, name)
    raise AttributeError(f"module 'outlast' has no attribute {name!r}")


__all__ = [  # noqa: RUF022 - AsyncClient, Client, ClientError and Run come lazily (see __getattr__)
    "AsyncClient",
    "Attempt",
    "ChildFailed",
    "ChildRun",
    "Client",
    "ClientError",
    "Component",
    "ConfigError",
    "Event",
    "InputRejected",
    "InputTimeout",
    "InputValidationError",
    "LocalRun",
    "MemoryStore",
    "NonDeterminismError",
    "NotWaiting",
    "Outcome",
    "OutlastError",
    "ProtocolViolation",
    "RedisStore",
    "Registry",
    "Retry",
    "RunEnded",
    "RunFailed",
    "RunNotFound",
    "RunWaiting",
    "Run",
    "Runner",
    "SerializationError",
    "StaleAttemptError",
    "StepCall",
    "StoreError",
    "StoreUnavailable",
    "Workflow",
    "WorkflowNotFound",
    "component",
    "connect",
    "emit",
    "gather",
    "log",
    "output",
    "progress",
    "publish",
    "run_child",
    "run_local",
    "sleep",
    "start_child",
    "status",
    "wait_for_input",
    "workflow",
]
