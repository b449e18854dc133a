"""Request and response bodies (they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from outlast.core.trace import AttemptInfo, Span
from outlast.events import RunStatus


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. run_not_found.")
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="Checked against the input_schema.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The same key (per workflow and tenant) returns the same run for 24 hours.",
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Deployment version to run on (default: the active one).",
    )
    fairness_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Queue the run fairly behind this key (per tenant; default: the tenant, if any): "
        "runs are taken round-robin across keys, so one key's burst does not hold up the others'.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="With fairness_key: the most runs of the key in flight across the fleet (0 clears).",
    )

    @model_validator(mode="before")
    @classmethod
    def _input_goes_under_input(cls, data: Any) -> Any:
        """``{"topic": "x"}`` is the commonest mistake: say where the workflow's input goes."""
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                names = ", ".join(repr(k.encode("utf-8", "backslashreplace").decode()) for k in unknown)
                hint = (
                    'the workflow\'s input goes under "input": {"input": {...}}'
                    if "input" not in data
                    else 'a start body has only "input", "idempotency_key", "version", "fairness_key" '
                    'and "max_concurrency"'
                )
                raise PydanticCustomError("input_not_wrapped", f"unknown field(s) {names}: {hint}")
        return data


class StartedRun(BaseModel):
    run_id: str
    status: RunStatus
    created: bool = Field(description="False when an idempotency key returned an existing run.")
    url: str
    events_url: str


class RunSummary(BaseModel):
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    attempt: int
    created_at: float
    updated_at: float | None = None
    finished_at: float | None = None
    last_seq: int
    tokens: int = Field(default=0, description="LLM tokens (in + out) of the run's completed steps.")
    cost: float = Field(default=0.0, description="Their estimated cost in US dollars (priced providers).")

    @field_validator("tokens", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return int(float(value)) if isinstance(value, str | float) else value  # Redis sums as floats


class PendingWait(BaseModel):
    """Something a run waits for: an input request, a durable sleep or a child run."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    kind: Literal["input", "sleep", "child"]
    step: str | None = Field(default=None, description="The waiting step's id, e.g. input:approve#0.")
    key: str | None = Field(default=None, description="input: POST the value to /v1/runs/{id}/inputs/{key}.")
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="input: the JSON Schema the value must match (if any)."
    )
    prompt: str | None = Field(default=None, description="input: what to ask whoever supplies it.")
    secret: bool = Field(
        default=False, description="input: a secret (render a password field); its events show a mask."
    )
    deadline: float | None = Field(
        default=None,
        description="When it times out (input) or ends (sleep), in seconds since the epoch; null if never.",
    )
    child_run_id: str | None = Field(default=None, description="child: the run waited for.")


class RunDetail(RunSummary):
    input: dict[str, Any] = Field(description="Secret arguments are masked.")
    result: Any = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    progress: dict[str, Any] | None = None
    status_message: str | None = None
    cancel_requested: bool = False
    waiting_for: list[PendingWait] = Field(
        default_factory=list, description="What the run waits for, oldest first (empty once it ended)."
    )
    objects: dict[str, Any] = Field(
        default_factory=dict, description="Current value of each published object, as of last_seq."
    )
    url: str
    events_url: str


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at the end.")


class CancelResult(BaseModel):
    run_id: str
    status: Literal["cancelled", "cancelling"]


class InputAccepted(BaseModel):
    run_id: str
    key: str
    status: Literal["resumed", "delivered"] = Field(
        description="resumed: the run was suspended and is queued again; delivered: its running "
        "attempt takes the value."
    )


class WorkflowInfo(BaseModel):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    secret_args: list[str] = Field(default_factory=list)
    version: str = Field(description="The version this description comes from (the active one if any).")
    versions: list[str] = Field(description="Every version with a worker that registered it.")


class WorkflowList(BaseModel):
    active_version: str | None
    versions: list[str]
    workflows: list[WorkflowInfo]


class Usage(BaseModel):
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0


class Trace(BaseModel):
    run_id: str
    spans: list[Span]
    attempts: list[AttemptInfo] = Field(description="Each attempt: its worker and why it ended.")
    usage: Usage = Field(description="LLM tokens and estimated cost of the run's completed steps.")


class WorkerInfo(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    slots: int = Field(description="How many runs it executes at once (its concurrency).")
    running: int = Field(description="Runs it executes now.")
    draining: bool = Field(description="It takes no new runs and hands its runs off (shutting down).")
    heartbeat_age: float = Field(description="Seconds since its last heartbeat.")


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


class VersionStatus(BaseModel):
    version: str
    workers: int = Field(description="Live workers of this version.")
    in_flight: int = Field(description="Runs a worker of this version holds a lease on.")
    queued: int = Field(description="Queue depth: runs waiting for a worker of this version.")
    state: Literal["active", "draining", "drained"]


class DeployStatus(BaseModel):
    active: str | None = Field(description="The version new runs go to (null: none promoted yet).")
    versions: list[VersionStatus]
    can_deploy: bool = Field(description="Whether this caller may promote and roll back.")


class Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


class DeployChange(BaseModel):
    active: str
    previous: str | None = Field(description="The version that was active before.")


class EventEnvelope(BaseModel):
    """One event of a run (docs/protocol.md §1): an SSE frame's ``data:`` (its ``id:`` is ``seq``,
    its ``event:`` is ``type``), or one NDJSON line."""

    v: int = Field(description="Schema version, 1.")
    seq: int = Field(description="Position in the run's log: 1, 2, 3… with no gaps; resume after it.")
    type: str = Field(description="Event type, e.g. run.started, output, run.completed (protocol §3).")
    run_id: str
    attempt: int = Field(description="The attempt that wrote it (0 for run.queued and stream.gap).")
    step: str | None = Field(description="The step it belongs to; null for run-level events.")
    ts: float = Field(description="Unix time in seconds, taken by the writer.")
    data: dict[str, Any] = Field(description="Type-specific payload, secrets masked.")


class StreamError(BaseModel):
    """Why a stream ended before its run did: the ``data:`` of an SSE ``error`` event, or an NDJSON
    line with this ``error`` key (an envelope never has one). Resume from the last seq received."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


def errors_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer with."""
    return {status: {"model": ErrorBody} for status in statuses}
