"""Outlast: durable, streaming workflows for long-running AI apps.

Components are checkpointed steps; workflows compose them and survive crashes by replaying
completed steps from their stored results; every event flows through the run's stream.
"""

from outlast.core.component import Component, StepCall, component
from outlast.core.emit import emit, log, output, progress, publish, status
from outlast.core.gather import gather
from outlast.core.retry import Retry
from outlast.core.runner import Attempt, LocalRun, Outcome, Runner, run_local
from outlast.core.workflow import Registry, Workflow, workflow
from outlast.errors import (
    ConfigError,
    InputValidationError,
    NonDeterminismError,
    OutlastError,
    RunFailed,
    RunNotFound,
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

__all__ = [
    "Attempt",
    "Component",
    "ConfigError",
    "Event",
    "InputValidationError",
    "LocalRun",
    "MemoryStore",
    "NonDeterminismError",
    "Outcome",
    "OutlastError",
    "RedisStore",
    "Registry",
    "Retry",
    "RunFailed",
    "RunNotFound",
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
    "run_local",
    "status",
    "workflow",
]
