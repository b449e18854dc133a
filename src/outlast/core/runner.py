"""Run workflows durably in this process: start a run, execute an attempt, replay on restart.

The compute plane (workers) builds on :class:`Runner`; tests and simple apps use it directly::

    runner = Runner(RedisStore(redis))
    run_id = await runner.start(blog, {"topic": "durable AI"})
    outcome = await runner.execute(blog, run_id)     # a new attempt replays completed steps

Cancelling the task that runs an attempt *abandons* it (as a crash would: nothing terminal is
written and a later attempt resumes from the checkpoints); :meth:`Attempt.cancel` instead ends
the run ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outlast import events as ev
from outlast import serde
from outlast.core.component import checkpoint_from_json, error_info
from outlast.core.context import Checkpoint, Frame, RunContext, current_frame
from outlast.core.waitset import LocalWaits, WaitSet
from outlast.core.workflow import Workflow
from outlast.core.writer import EventWriter
from outlast.errors import (
    ConfigError,
    NonDeterminismError,
    OutlastError,
    RunFailed,
    SerializationError,
)
from outlast.events import AttemptStatus, ErrorInfo, Reason, RunStatus
from outlast.ids import new_run_id
from outlast.masking import Secrets
from outlast.store.base import (
    OP_EXPIRE,
    OP_META,
    AttemptStart,
    NewRun,
    Op,
    RunRecord,
    RunStore,
    WaitBackend,
    checked_retention,
)
from outlast.store.memory import MemoryStore


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``completed``, ``failed``, ``cancelled``, ``suspended`` (the run
    waits; a later attempt resumes it) or ``abandoned``."""

    run_id: str
    status: AttemptStatus
    attempt: int
    result: Any = None
    error: ErrorInfo | None = None


class Runner:
    """Starts runs and executes attempts of them against a store."""

    def __init__(
        self,
        store: RunStore,
        *,
        retention: float = 7 * 24 * 3600,
        flush_interval: float = 0.03,
        frame_chars: int = 512,
        worker_id: str | None = None,
        waits: WaitBackend | None = None,
        hold: float = 1.0,
        wait_poll: float = 1.0,
    ) -> None:
        """``hold``: a wait due within this many seconds is waited for in memory; a longer one
        suspends the run. ``wait_poll``: how often a run that is still busy checks whether one
        of its waits was settled."""
        self.store = store
        self.retention = checked_retention(retention)
        self.flush_interval = flush_interval
        self.frame_chars = frame_chars
        self.worker_id = worker_id
        if waits is None:
            waits = store.wait_backend() or LocalWaits(self)
        self.waits: WaitBackend = waits
        self.hold = hold
        self.wait_poll = wait_poll
        #: Whether the executor has a free slot: a fan-out parent lingers only then (a full
        #: worker's slot is better given to the runs queued behind it, its children perhaps).
        self.spare_slot: Callable[[], bool] = lambda: True

    async def start(
        self,
        wf: Workflow[Any, Any],
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        version: str = "dev",
        tenant: str = "",
        extra: dict[str, str] | None = None,
    ) -> str:
        """Validate the input and record a queued run (idempotent for a given ``run_id``)."""
        run = NewRun(
            run_id=run_id or new_run_id(), workflow=wf.name, input=wf.validate_input(input),
            version=version, tenant=tenant, extra=extra or {},
        )  # fmt: skip
        await self.store.create_run(run, run.queued_event(wf.secret_args))
        return run.run_id

    async def begin(
        self, wf: Workflow[Any, Any], run_id: str, *, expected_attempt: int | None = None
    ) -> Attempt:
        """Take the fence for a new attempt and load what earlier attempts completed."""
        start = await self.store.begin_attempt(run_id, expected_attempt)
        return await self.load(wf, run_id, start)

    async def load(self, wf: Workflow[Any, Any], run_id: str, start: AttemptStart) -> Attempt:
        """Prepare an attempt whose fence was already taken (by ``begin`` or a worker's claim)."""
        record = await self.store.get_run(run_id)
        steps = await self.store.load_steps(run_id)
        objects = await self.store.load_objects(run_id)
        waits = await self.store.load_waits(run_id)
        return self.prepare(wf, run_id, start, record, steps, objects, waits)

    def prepare(
        self,
        wf: Workflow[Any, Any],
        run_id: str,
        start: AttemptStart,
        record: RunRecord,
        steps: dict[str, bytes],
        objects: dict[str, Any],
        waits: dict[str, bytes] | None = None,
    ) -> Attempt:
        """An attempt from state already read (a worker's claim returns it in the same call)."""
        if record.workflow != wf.name:
            raise ConfigError(f"run {run_id} is a {record.workflow!r} run, not {wf.name!r}")
        checkpoints: dict[str, Checkpoint] = {}
        emitted: set[str] = set()
        for key, raw in steps.items():
            if key.startswith("e:"):
                emitted.add(key)
            else:
                checkpoints[key] = checkpoint_from_json(raw)
        records = {position: serde.loads(raw) for position, raw in (waits or {}).items()}
        return Attempt(self, wf, record, start, checkpoints, emitted, objects, records)

    async def execute(
        self, wf: Workflow[Any, Any], run_id: str, *, expected_attempt: int | None = None
    ) -> Outcome:
        attempt = await self.begin(wf, run_id, expected_attempt=expected_attempt)
        return await attempt.run()

    async def run(self, wf: Workflow[Any, Any], input: dict[str, Any] | None = None, **options: Any) -> Any:
        """Start and execute a run to its end; its result, or RunFailed."""
        run_id = await self.start(wf, input, **options)
        outcome = await self.execute(wf, run_id)
        if outcome.status != AttemptStatus.COMPLETED:
            raise RunFailed(run_id, outcome.status, outcome.error)
        return outcome.result


class Attempt:
    """One attempt of one run, holding the fence (its attempt number)."""

    def __init__(
        self,
        runner: Runner,
        wf: Workflow[Any, Any],
        record: RunRecord,
        start: AttemptStart,
        checkpoints: dict[str, Checkpoint],
        emitted: set[str],
        objects: dict[str, Any],
        waits: dict[str, dict[str, Any]],
    ) -> None:
        self.runner = runner
        self.workflow = wf
        self.run_id = run_id = record.run_id
        self.attempt = attempt = start.attempt
        self.input = input = record.input
        self.parent = record.parent
        secrets = Secrets()
        for name in wf.secret_args:
            secrets.add(input.get(name))
        self.writer = EventWriter(
            runner.store, run_id, attempt, start.last_seq + 1, secrets=secrets, on_fenced=self._writer_failed,
            flush_interval=runner.flush_interval, frame_chars=runner.frame_chars,
        )  # fmt: skip
        self.ctx = RunContext(
            run_id=run_id, attempt=attempt, workflow=wf.name, writer=self.writer, checkpoints=checkpoints,
            emitted=emitted, objects=objects, lenient_replay=wf.lenient_replay, secrets=secrets,
            version=record.version, tenant=record.tenant,
        )  # fmt: skip
        self.waits = self.ctx.waits = WaitSet(
            self.ctx, runner.waits, waits, hold=runner.hold, poll_interval=runner.wait_poll,
            on_suspend=self._suspend_body, spare_slot=runner.spare_slot,
        )  # fmt: skip
        self._suspending = False
        self._waiting_on: list[str] = []
        self._body: asyncio.Task[Any] | None = None
        self._cancel_reason: Reason | None = None
        self._cancel_requested = asyncio.Event()
        self._announced = False

    def cancel(self, reason: Reason = Reason.CANCELLED) -> None:
        """End the run ``cancelled``: running steps see CancelledError (once: a repeated request,
        say from both the cancel channel and the heartbeat, must not interrupt their clean-up)."""
        if self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._cancel_requested.set()
        if self._body is not None:
            self._body.cancel()

    def _suspend_body(self) -> None:
        # Every branch waits: stop the body; _finish parks the run (or runs it again if woken).
        # What it waits for is taken now: cancelling the body unwinds the waits.
        self._suspending = True
        self._waiting_on = self.waits.blocked()
        if self._body is not None:
            self._body.cancel()

    def wake(self) -> None:
        """One of the run's waits was settled elsewhere: read it now rather than at the next poll."""
        self.waits.poke()

    def suspend_soon(self) -> None:
        """Suspend as soon as every branch waits, however near its deadline (a draining worker)."""
        self.waits.suspend_now = True
        self.waits.poke()

    def _writer_failed(self, _exc: BaseException) -> None:
        # Fenced or store lost: stop the body, and any workflow-retry wait, for good.
        self._cancel_requested.set()
        if self._body is not None:
            self._body.cancel()

    async def run(self) -> Outcome:
        writer = self.writer
        try:
            return await self._finish()
        finally:
            await self.waits.stop()
            await writer.close()

    def _start_body(self) -> asyncio.Task[Any]:
        context = contextvars.copy_context()
        context.run(current_frame.set, Frame(self.ctx, None, ""))  # a fresh root: replay from the top
        kwargs = self.workflow.bind_input(self.input)
        self._body = asyncio.create_task(self.workflow.fn(**kwargs), context=context)
        if not self._announced:
            # Queued after the body task exists but before it runs: run.started still gets the
            # first seq, and the writer's flusher (created by this event) is scheduled after the
            # body, so the body's first events share run.started's round trip.
            self._announced = True
            data = {
                "attempt": self.attempt,
                "checkpoints": len(self.ctx.checkpoints),
                "worker": self.runner.worker_id,
            }
            self.writer.event(ev.RUN_STARTED, None, data)
        if self._cancel_reason is not None:
            self._body.cancel()
        return self._body

    async def _finish(self) -> Outcome:
        writer = self.writer
        policy = self.workflow.retry
        tries = 0
        while True:
            tries += 1
            try:
                value = await self._start_body()
                break
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # The attempt itself is being abandoned (shutdown, crash test): write nothing final.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.drain(), 1.0)
                    raise
                if writer.failure is not None:
                    return self._abandoned()
                if self._suspending and self._cancel_reason is None:
                    suspended = await self._suspend()
                    if suspended is None:  # a wait was settled meanwhile: replay on, same attempt
                        tries -= 1
                        continue
                    return suspended
                if self._cancel_reason is None:
                    # Nobody asked for it: a CancelledError raised by the workflow's own code (or a
                    # library it uses) is a failure, not a cancellation of the run.
                    error: ErrorInfo = {"type": "CancelledError", "reason": Reason.ERROR,
                                        "message": "cancelled by the workflow's own code"}  # fmt: skip
                    return await self._failed(error)
                return await self._cancelled()
            except Exception as exc:
                if writer.failure is not None:
                    return self._abandoned()
                if policy is not None and tries < policy.attempts and policy.should_retry(exc):
                    # The workflow's own retry policy: run the body again in this attempt; the
                    # steps that completed return their results, the failed one runs again.
                    delay = policy.delay(tries)
                    writer.event(
                        ev.RUN_RETRYING, None, {"try": tries, "error": error_info(exc), "delay": delay}
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cancel_requested.wait(), delay)
                    if writer.failure is not None:
                        return self._abandoned()
                    if self._cancel_reason is not None:
                        return await self._cancelled()
                    continue
                error = error_info(exc, with_traceback=True)
                error["reason"] = Reason.ERROR
                if isinstance(exc, NonDeterminismError):
                    error["reason"], error["step"] = Reason.NON_DETERMINISM, exc.step_id
                return await self._failed(error)
        if writer.failure is not None:
            return self._abandoned()
        try:
            stored = serde.to_jsonable(value, f"result of workflow {self.workflow.name!r}")
        except SerializationError as exc:
            return await self._failed({**error_info(exc), "reason": Reason.ERROR})
        return await self._terminal(RunStatus.COMPLETED, ev.RUN_COMPLETED, {"result": stored}, stored, None)

    async def _suspend(self) -> Outcome | None:
        """Park the run (status ``waiting``); None when a wait was settled in the meantime."""
        self._suspending = False
        writer = self.writer
        positions = self._waiting_on
        if not positions:  # nothing would ever wake it: run the body on instead
            self.waits.reset()
            return None
        try:
            await writer.drain()
            item = writer.reserve(ev.RUN_WAITING, None, {"waits": self.waits.summary(positions)})
            answer = await self.runner.waits.suspend(self.run_id, self.attempt, item, positions)
        except OutlastError as exc:
            writer.failure = writer.failure or exc
            return self._abandoned()
        if answer == "ok":
            writer.confirm(item)
            return Outcome(self.run_id, AttemptStatus.SUSPENDED, self.attempt)
        writer.unreserve(item)
        if answer == "cancel":
            self._cancel_reason = Reason.CANCELLED
            return await self._cancelled()
        found = await self.runner.waits.resolutions(self.run_id, positions)
        for position, raw in found.items():
            self.ctx.checkpoints[position] = checkpoint_from_json(raw)
        self.waits.reset()
        return None

    async def _cancelled(self) -> Outcome:
        reason = self._cancel_reason or Reason.CANCELLED
        return await self._terminal(RunStatus.CANCELLED, ev.RUN_CANCELLED, {"reason": reason}, None, None)

    async def _failed(self, error: ErrorInfo) -> Outcome:
        data = {"error": error, "reason": error.get("reason", Reason.ERROR)}
        return await self._terminal(RunStatus.FAILED, ev.RUN_FAILED, data, None, error)

    async def _terminal(
        self, status: RunStatus, type: str, data: dict[str, Any], result: Any, error: ErrorInfo | None
    ) -> Outcome:
        # The run record is read by the API and the console: it gets the same masking as events.
        secrets = self.ctx.secrets
        if error is not None:
            error = secrets.mask(error)
        ops: list[Op] = [(OP_META, "status", status), (OP_META, "finished_at", repr(time.time()))]
        if status == RunStatus.COMPLETED:
            ops.append((OP_META, "result", serde.dumps(secrets.mask(result))))
        if error is not None:
            ops.append((OP_META, "error", serde.dumps(error)))
        ops.append((OP_EXPIRE, repr(self.runner.retention), ""))
        try:
            await self.writer.commit(type, None, data, ops)
        except SerializationError as exc:
            if status != RunStatus.COMPLETED:
                raise
            # The result itself cannot be stored (too large): the run fails and says why.
            return await self._failed({**error_info(exc), "reason": Reason.ERROR})
        except OutlastError:
            # Fenced, or the store failed for good: another attempt will finish the run.
            if self.writer.failure is None:
                self.writer.failure = OutlastError("the terminal event could not be written")
            return self._abandoned()
        self.writer.closed = True
        if self.parent:
            # Tell the parent now; if this fails, the parent's poll of its child finds out.
            with contextlib.suppress(OutlastError):
                await self.runner.waits.child_ended(self.parent, self.run_id)
        return Outcome(self.run_id, AttemptStatus(status), self.attempt, result, error)

    def _abandoned(self) -> Outcome:
        error = error_info(self.writer.failure) if self.writer.failure else None
        return Outcome(self.run_id, AttemptStatus.ABANDONED, self.attempt, None, error)


@dataclass
class LocalRun:
    """A workflow run in memory: its result (when completed) and every event it wrote."""

    run_id: str
    status: AttemptStatus
    result: Any
    error: ErrorInfo | None
    events: list[ev.Event] = field(default_factory=list)


async def run_local(
    wf: Workflow[Any, Any], input: dict[str, Any] | None = None, *, inputs: dict[str, Any] | None = None
) -> LocalRun:
    """Run a workflow in-process with no server: for unit tests of workflows.

    Durable sleeps end at once, ``wait_for_input(key)`` gets ``inputs[key]`` (or times out at
    once when it has a timeout) and child runs execute inline.
    """
    store = MemoryStore()
    runner = Runner(store)
    runner.waits = LocalWaits(runner, inputs)
    run_id = await runner.start(wf, input)
    outcome = await runner.execute(wf, run_id)
    events = [event async for event in store.read_events(run_id, follow=False)]
    return LocalRun(run_id, outcome.status, outcome.result, outcome.error, events)
