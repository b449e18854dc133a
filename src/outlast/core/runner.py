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
from dataclasses import dataclass, field
from typing import Any

from outlast import events as ev
from outlast.core import serde
from outlast.core.component import checkpoint_from_json, error_info
from outlast.core.context import Checkpoint, Frame, RunContext, current_frame
from outlast.core.ids import new_run_id
from outlast.core.masking import Secrets
from outlast.core.workflow import Workflow
from outlast.core.writer import EventWriter
from outlast.errors import (
    ConfigError,
    NonDeterminismError,
    OutlastError,
    RunFailed,
    SerializationError,
)
from outlast.store.base import OP_EXPIRE, OP_META, AttemptStart, NewRun, Op, RunRecord, RunStore
from outlast.store.memory import MemoryStore


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``completed``, ``failed``, ``cancelled`` or ``abandoned``."""

    run_id: str
    status: str
    attempt: int
    result: Any = None
    error: dict[str, Any] | None = None


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
    ) -> None:
        self.store = store
        self.retention = retention
        self.flush_interval = flush_interval
        self.frame_chars = frame_chars
        self.worker_id = worker_id

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
        return self.prepare(wf, run_id, start, record, steps, objects)

    def prepare(
        self,
        wf: Workflow[Any, Any],
        run_id: str,
        start: AttemptStart,
        record: RunRecord,
        steps: dict[str, bytes],
        objects: dict[str, Any],
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
        return Attempt(
            self, wf, run_id, start.attempt, start.last_seq, record.input, checkpoints, emitted, objects
        )

    async def execute(
        self, wf: Workflow[Any, Any], run_id: str, *, expected_attempt: int | None = None
    ) -> Outcome:
        attempt = await self.begin(wf, run_id, expected_attempt=expected_attempt)
        return await attempt.run()

    async def run(self, wf: Workflow[Any, Any], input: dict[str, Any] | None = None, **options: Any) -> Any:
        """Start and execute a run to its end; its result, or RunFailed."""
        run_id = await self.start(wf, input, **options)
        outcome = await self.execute(wf, run_id)
        if outcome.status != "completed":
            raise RunFailed(run_id, outcome.status, outcome.error)
        return outcome.result


class Attempt:
    """One attempt of one run, holding the fence (its attempt number)."""

    def __init__(
        self,
        runner: Runner,
        wf: Workflow[Any, Any],
        run_id: str,
        attempt: int,
        last_seq: int,
        input: dict[str, Any],
        checkpoints: dict[str, Checkpoint],
        emitted: set[str],
        objects: dict[str, Any],
    ) -> None:
        self.runner = runner
        self.workflow = wf
        self.run_id = run_id
        self.attempt = attempt
        self.input = input
        secrets = Secrets()
        for name in wf.secret_args:
            secrets.add(input.get(name))
        self.writer = EventWriter(
            runner.store, run_id, attempt, last_seq + 1, secrets=secrets, on_fenced=self._writer_failed,
            flush_interval=runner.flush_interval, frame_chars=runner.frame_chars,
        )  # fmt: skip
        self.ctx = RunContext(
            run_id=run_id, attempt=attempt, workflow=wf.name, writer=self.writer, checkpoints=checkpoints,
            emitted=emitted, objects=objects, lenient_replay=wf.lenient_replay, secrets=secrets,
        )  # fmt: skip
        self._body: asyncio.Task[Any] | None = None
        self._cancel_reason: str | None = None
        self._cancel_requested = asyncio.Event()
        self._announced = False

    def cancel(self, reason: str = "cancelled") -> None:
        """End the run ``cancelled``: running steps see CancelledError (once: a repeated request,
        say from both the cancel channel and the heartbeat, must not interrupt their clean-up)."""
        if self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._cancel_requested.set()
        if self._body is not None:
            self._body.cancel()

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
                if self._cancel_reason is None:
                    # Nobody asked for it: a CancelledError raised by the workflow's own code (or a
                    # library it uses) is a failure, not a cancellation of the run.
                    error = {"type": "CancelledError", "message": "cancelled by the workflow's own code",
                             "reason": "error"}  # fmt: skip
                    return await self._terminal("failed", ev.RUN_FAILED, {"error": error, "reason": "error"},
                                                None, error)  # fmt: skip
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
                error = error_info(exc)
                error["reason"] = "error"
                if isinstance(exc, NonDeterminismError):
                    error.update(reason="non_determinism", step=exc.step_id)
                data = {"error": error, "reason": error["reason"]}
                return await self._terminal("failed", ev.RUN_FAILED, data, None, error)
        if writer.failure is not None:
            return self._abandoned()
        try:
            stored = serde.to_jsonable(value, f"result of workflow {self.workflow.name!r}")
        except SerializationError as exc:
            error = {**error_info(exc), "reason": "error"}
            return await self._terminal(
                "failed", ev.RUN_FAILED, {"error": error, "reason": "error"}, None, error
            )
        return await self._terminal("completed", ev.RUN_COMPLETED, {"result": stored}, stored, None)

    async def _cancelled(self) -> Outcome:
        reason = self._cancel_reason or "cancelled"
        return await self._terminal("cancelled", ev.RUN_CANCELLED, {"reason": reason}, None, None)

    async def _terminal(
        self, status: str, type: str, data: dict[str, Any], result: Any, error: dict[str, Any] | None
    ) -> Outcome:
        # The run record is read by the API and the console: it gets the same masking as events.
        secrets = self.ctx.secrets
        if error is not None:
            error = secrets.mask(error)
        ops: list[Op] = [(OP_META, "status", status), (OP_META, "finished_at", repr(time.time()))]
        if status == "completed":
            ops.append((OP_META, "result", serde.dumps(secrets.mask(result))))
        if error is not None:
            ops.append((OP_META, "error", serde.dumps(error)))
        ops.append((OP_EXPIRE, repr(self.runner.retention), ""))
        try:
            await self.writer.commit(type, None, data, ops)
        except SerializationError as exc:
            if status != "completed":
                raise
            # The result itself cannot be stored (too large): the run fails and says why.
            error = {**error_info(exc), "reason": "error"}
            return await self._terminal(
                "failed", ev.RUN_FAILED, {"error": error, "reason": "error"}, None, error
            )
        except OutlastError:
            # Fenced, or the store failed for good: another attempt will finish the run.
            if self.writer.failure is None:
                self.writer.failure = OutlastError("the terminal event could not be written")
            return self._abandoned()
        self.writer.closed = True
        return Outcome(self.run_id, status, self.attempt, result, error)

    def _abandoned(self) -> Outcome:
        error = error_info(self.writer.failure) if self.writer.failure else None
        return Outcome(self.run_id, "abandoned", self.attempt, None, error)


@dataclass
class LocalRun:
    """A workflow run in memory: its result (when completed) and every event it wrote."""

    run_id: str
    status: str
    result: Any
    error: dict[str, Any] | None
    events: list[ev.Event] = field(default_factory=list)


async def run_local(wf: Workflow[Any, Any], input: dict[str, Any] | None = None) -> LocalRun:
    """Run a workflow in-process with no server: for unit tests of workflows."""
    store = MemoryStore()
    runner = Runner(store)
    run_id = await runner.start(wf, input)
    outcome = await runner.execute(wf, run_id)
    events = [event async for event in store.read_events(run_id, follow=False)]
    return LocalRun(run_id, outcome.status, outcome.result, outcome.error, events)
