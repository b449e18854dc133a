"""What the runtime needs from a durable store, and the records it stores.

Two implementations share these semantics: :class:`~outlast.store.redis.RedisStore` (the
real one, Lua scripts over a Redis-compatible server) and
:class:`~outlast.store.memory.MemoryStore` (in-process, for unit tests of user workflows).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from outlast import serde
from outlast.errors import ConfigError, InputValidationError
from outlast.events import RUN_QUEUED, SCHEMA_VERSION, Event, RunStatus, envelope
from outlast.ids import valid_run_id
from outlast.masking import MASK
from outlast.sizes import MAX_INPUT_BYTES

#: Opcodes of side effects applied atomically with an event (see store/scripts.py).
OP_META = "H"  # HSET meta <field> <value>
OP_STEP = "C"  # HSET steps <field> <value>   (checkpoints and emission markers)
OP_OBJECT = "O"  # HSET objects <name> <json>
OP_WAIT = "W"  # HSET waits <position> <json>  (a wait is recorded)
OP_EXPIRE = "X"  # EXPIRE every run key after <seconds>
OP_ADD = "I"  # HINCRBYFLOAT meta <field> <amount>  (running totals: tokens, cost)


def checked_retention(seconds: float) -> float:
    """How long a finished run's keys live, validated: the scripts PEXPIRE them in whole ms, and
    0 ms would delete them at once (a field written after that would then live for ever)."""
    if not 0.001 <= seconds <= 1e10:  # NaN fails both; far beyond 1e10 s PEXPIRE refuses
        raise ConfigError(f"retention must be between 0.001 and 1e10 seconds, got {seconds!r}")
    return seconds


#: One side effect: (opcode, a, b).
Op = tuple[str, str, str | bytes]


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One event to append (``payload`` is the JSON envelope) and its side effects."""

    seq: int
    payload: bytes
    ops: tuple[Op, ...] = ()


#: Meta fields the store owns; ``NewRun.extra`` may not set them.
CORE_META_FIELDS = frozenset(
    {"v", "run_id", "workflow", "version", "tenant", "input", "status", "attempt", "last_seq", "created_at",
     "updated_at", "started_at", "finished_at", "result", "error", "progress", "status_message",
     "lease_owner", "lease_until", "cancel_requested", "lost_workers", "lane", "parent", "resumes",
     "losses", "tokens", "cost", "fairness_key", "queue", "dispatched"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run about to be recorded: ``input`` already validated, in JSON types."""

    run_id: str
    workflow: str
    input: dict[str, Any]
    version: str = "dev"
    tenant: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    lane: str = ""  # the work stream's version when it differs from ``version`` (upgrade-safe runs)
    parent: str = ""  # the run that started this one as its child
    fairness_key: str = ""  # queued behind this key in its partition's fair queue ("" = straight on)
    queue: str = ""  # the work-stream partition it was queued on (set by RunQueue.enqueue)

    def __post_init__(self) -> None:
        if not valid_run_id(self.run_id):
            raise ConfigError(f"run id {self.run_id!r}: use 1-128 letters, digits, '_', '-', '.', ':'")
        clash = sorted(CORE_META_FIELDS & set(self.extra))
        if clash:
            raise ConfigError(f"extra run fields {clash} would overwrite the run's own fields")

    def meta_fields(self) -> dict[str, str]:
        """Fields stored in the run's meta hash besides the core ones."""
        fields = dict(self.extra)
        if self.lane:
            fields["lane"] = self.lane
        if self.parent:
            fields["parent"] = self.parent
        if self.fairness_key:
            fields["fairness_key"] = self.fairness_key
            fields["queue"] = self.queue
        return fields

    def queued_event(self, secret_args: tuple[str, ...] = ()) -> bytes:
        """The run's first event, ``run.queued`` (seq 1, attempt 0), secret inputs masked.

        InputValidationError when the input is too large for the events it is copied into
        (``run.queued`` here, and the arguments of the steps it is passed to): caught at start,
        before anything is written, rather than when the run fails at its first step."""
        shown = {k: (MASK if k in secret_args else v) for k, v in self.input.items()}
        event = serde.dumps(
            envelope(
                seq=1, type=RUN_QUEUED, run_id=self.run_id, attempt=0, step=None, ts=time.time(),
                data={"workflow": self.workflow, "input": shown, "version": self.version},
            )
        )  # fmt: skip
        if len(event) > MAX_INPUT_BYTES:  # (the envelope's few bytes count against the headroom)
            size = len(serde.dumps(self.input))
            message = (
                f"input of {size:,} bytes (as JSON) is over the {MAX_INPUT_BYTES:,}-byte limit for a run's "
                "input: it must fit the events it is copied into; store large data elsewhere and pass a "
                "reference"
            )
            raise InputValidationError(message, [{"loc": ["input"], "msg": message, "type": "too_large"}])
        return event


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """A new attempt took the fence: it numbers its events from ``last_seq + 1``."""

    attempt: int
    last_seq: int


class RunRecord(BaseModel):
    """A run's metadata (the ``meta`` hash), decoded."""

    v: int = SCHEMA_VERSION
    run_id: str
    workflow: str
    version: str = "dev"
    tenant: str = ""
    status: RunStatus
    attempt: int = 0
    input: dict[str, Any] = {}
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    last_seq: int = 0
    progress: dict[str, Any] | None = None
    status_message: str | None = None
    lease_owner: str = ""
    lease_until: float = 0
    cancel_requested: bool = False
    lost_workers: str = ""
    lane: str = ""  # the work stream's version ("@any" for upgrade-safe runs); "" = its version
    parent: str = ""  # the parent run, for a child run
    resumes: int = 0  # attempts that resumed the run after it waited (not counted as restarts)
    losses: int = 0  # attempts in a row that lost their worker since the run last made progress
    tokens: float = 0  # LLM tokens (in + out) of its completed steps, added with each step.completed
    cost: float = 0  # their estimated cost in US dollars (steps with a known price)
    fairness_key: str = ""  # the fair queue's key it was started with ("" = none)
    queue: str = ""  # the work-stream partition of its fair queue (its cap is released there)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> RunRecord:
        data: dict[str, Any] = dict(raw)
        for name in ("input", "result", "error", "progress"):
            if name in data:
                data[name] = serde.loads(data[name])
        return cls.model_validate(data)


class WaitBackend(Protocol):
    """Where waits are recorded and settled: Redis (suspending) or in-process (run_local)."""

    can_suspend: bool

    async def arm(self, run_id: str, position: str, delay: float) -> tuple[int, int]: ...
    async def server_ms(self) -> int: ...
    async def resolutions(self, run_id: str, positions: Sequence[str]) -> dict[str, bytes]: ...
    async def fire(self, run_id: str, position: str) -> bytes | None: ...
    async def suspend(self, run_id: str, attempt: int, item: AppendItem, positions: Sequence[str]) -> str: ...
    async def registered(self, run_id: str, position: str, record: dict[str, Any]) -> bytes | None: ...
    # ``workflow`` is the child's Workflow (a core type the store does not know; in-process
    # backends execute it, Redis queues the run for a worker).
    async def start_child(self, run: NewRun, queued_event: bytes, lane: str, workflow: Any) -> None: ...
    async def child_ended(self, parent: str, child: str) -> bool: ...


class RunStore(Protocol):
    """The durable store of runs, checkpoints and event logs."""

    def wait_backend(self) -> WaitBackend | None:
        """The store's wait service, for a Runner given none; None when waits are settled in the
        runner's own process (the in-memory store: run_local)."""

    async def create_run(self, run: NewRun, queued_event: bytes) -> bool:
        """Write a run's metadata and its ``run.queued`` event (seq 1); False if it existed."""

    async def begin_attempt(self, run_id: str, expected: int | None = None) -> AttemptStart:
        """Take the fence: bump the attempt (only from ``expected`` when given), mark running."""

    async def append(self, run_id: str, attempt: int, items: Sequence[AppendItem]) -> int:
        """Append events with their side effects atomically, fenced by ``attempt``.

        Items whose seq is already written are skipped (a retried append is a no-op).
        Returns the run's last seq; raises StaleAttemptError when the fence moved on (nothing is
        written), ProtocolViolation at a seq gap (what came before the gap is kept).
        """

    async def load_steps(self, run_id: str) -> dict[str, bytes]:
        """The ``steps`` hash: checkpoints and emission markers (empty for an unknown run)."""

    async def load_objects(self, run_id: str) -> dict[str, Any]:
        """Current value of each published object (empty for an unknown run)."""

    async def load_waits(self, run_id: str) -> dict[str, bytes]:
        """The ``waits`` hash: pending waits by position, JSON records (empty for an unknown run)."""

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record; RunNotFound when there is none."""

    def read_events(
        self, run_id: str, after: int = 0, *, follow: bool = True, block_ms: int = 5_000
    ) -> AsyncIterator[Event]:
        """Events with seq > ``after`` in order; with ``follow``, tail until the terminal event.

        A trimmed range yields one synthetic ``stream.gap`` event (seq = the last missing seq).
        """
