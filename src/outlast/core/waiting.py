"""Waiting inside a workflow without holding a worker: human input, durable sleep, child runs.

::

    @workflow
    async def publish_post(topic: str) -> str:
        draft = await write_draft(topic)
        review = await wait_for_input("review", schema=Review, timeout=timedelta(days=2),
                                      prompt="Approve the draft?")
        await sleep(timedelta(hours=1))                      # durable: survives restarts
        return await run_child(send_newsletter, {"post": draft})

Each call is a step of the workflow *body* (not of a component): its position is fixed when it
is called, like a component call, and its settled result is checkpointed, so a replay returns
it. While nothing is settled the run's attempt *suspends* (status ``waiting``, no lease, no
worker slot) once every branch of the body waits; whatever settles the wait (the input
endpoint, any worker's timer scan, the child's end) re-queues the run and it replays to here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Coroutine, Generator
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter

from outlast import events as ev
from outlast import serde
from outlast.core.context import Checkpoint, Frame, current_frame
from outlast.core.workflow import Workflow
from outlast.errors import ChildFailed, ConfigError, InputTimeout, NonDeterminismError
from outlast.masking import MASK
from outlast.store import keys
from outlast.store.base import OP_STEP, NewRun

T = TypeVar("T")
_UNSET: Any = object()
#: What an input key may look like (it is a path segment of the input endpoint).
INPUT_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_KEY = re.compile(INPUT_KEY_PATTERN)


def _strings(value: Any) -> list[str]:
    """Every string value in a JSON value: the parts of a secret input to mask. Object keys are
    field names, not secrets (masking them would blank those names in every event)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _seconds(value: timedelta | float | int, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigError(f"{what} must not be negative, got {seconds}")
    return seconds


def _body_frame(what: str) -> Frame | None:
    """The workflow body's frame, None outside a run; a ConfigError inside a component."""
    frame = current_frame.get()
    if frame is not None and frame.step_id is not None:
        raise ConfigError(
            f"{what} waits durably, so it must be called from the workflow body, not inside the "
            f"component step {frame.step_id!r} (a component is one retriable unit of work)"
        )
    return frame


class WaitCall(Generic[T]):
    """One wait of the workflow body. Await it for its result."""

    kind = ""
    requested_event = ""

    def __init__(self, frame: Frame, name: str, delay: float | None) -> None:
        self.frame = frame
        self.position, index = frame.next_step()
        self.name = name
        self.step_id = f"{name}#{index}"
        self.delay = delay

    def record(self) -> dict[str, Any]:
        """The wait as stored in the run's ``waits`` hash (name/step_id/deadline are added)."""
        return {"kind": self.kind}

    def requested_data(self, record: dict[str, Any]) -> dict[str, Any]:
        return {}

    def settled_event(self, result: Any) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, result: Any) -> T:
        raise NotImplementedError

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()

    async def _run(self) -> T:
        waits = self.frame.ctx.waits
        if waits is None:
            raise ConfigError("this run has no wait service")
        checkpoint: Checkpoint = await waits.wait(self)
        return self.decode(checkpoint.result)


class InputCall(WaitCall[T]):
    kind = "input"
    requested_event = ev.INPUT_REQUESTED

    def __init__(
        self, frame: Frame, key: str, adapter: TypeAdapter[Any] | None, timeout: float | None,
        prompt: str, default: Any, secret: bool,
    ) -> None:  # fmt: skip
        super().__init__(frame, f"input:{key}", timeout)
        self.key = key
        self.adapter = adapter
        self.prompt = prompt
        self.default = default
        self.secret = secret

    def record(self) -> dict[str, Any]:
        schema = self.adapter.json_schema() if self.adapter is not None else None
        return {"kind": self.kind, "key": self.key, "schema": schema, "prompt": self.prompt,
                "has_default": self.default is not _UNSET, "secret": self.secret}  # fmt: skip

    def requested_data(self, record: dict[str, Any]) -> dict[str, Any]:
        deadline = record.get("deadline")
        return {"key": self.key, "schema": record["schema"], "prompt": self.prompt,
                "deadline": deadline / 1000 if deadline else None, "secret": self.secret}  # fmt: skip

    def settled_event(self, result: Any) -> tuple[str, dict[str, Any]]:
        if result.get("timed_out"):
            return ev.INPUT_TIMEOUT, {"key": self.key}
        return ev.INPUT_RECEIVED, {"key": self.key, "value": MASK if self.secret else result["value"]}

    def decode(self, result: Any) -> T:
        if result.get("timed_out"):
            if self.default is _UNSET:
                raise InputTimeout(self.key)
            return self.default  # type: ignore[no-any-return]
        value = result["value"]
        if self.secret:  # learned on every attempt (a replay too): later events mask it
            for text in _strings(value):
                self.frame.ctx.secrets.add(text)
        return self.adapter.validate_python(value) if self.adapter is not None else value  # type: ignore[no-any-return]


class SleepCall(WaitCall[None]):
    kind = "sleep"
    requested_event = ev.SLEEP_STARTED

    def requested_data(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": self.delay, "until": record["deadline"] / 1000}

    def settled_event(self, result: Any) -> tuple[str, dict[str, Any]]:
        return ev.SLEEP_ENDED, {}

    def decode(self, result: Any) -> None:
        return None


class ChildWait(WaitCall[T]):
    kind = "child"
    requested_event = ev.CHILD_WAITING

    def __init__(self, frame: Frame, workflow: Workflow[Any, Any], poll: float) -> None:
        super().__init__(frame, f"child:{workflow.name}", poll)
        self.workflow = workflow
        self.child = ""  # set before it is awaited

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "child": self.child}

    def requested_data(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"child_run_id": self.child, "workflow": self.workflow.name}

    def settled_event(self, result: Any) -> tuple[str, dict[str, Any]]:
        return ev.CHILD_COMPLETED, {"child_run_id": result["run_id"], "status": result["status"]}

    def decode(self, result: Any) -> T:
        if result["status"] != "completed":
            raise ChildFailed(result["run_id"], result["status"], result.get("error"))
        return self.workflow.output_adapter.validate_python(result["result"])  # type: ignore[no-any-return]


class ChildRun(Generic[T]):
    """A started child run. ``await child.result()`` waits for it durably."""

    def __init__(self, run_id: str, workflow: Workflow[Any, T], poll: float) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self._poll = poll

    def result(self) -> ChildWait[T]:
        frame = _body_frame("ChildRun.result()")
        if frame is None:
            raise ConfigError("ChildRun.result() must be awaited inside the workflow that started it")
        call: ChildWait[T] = ChildWait(frame, self.workflow, self._poll)
        call.child = self.run_id
        return call

    def __repr__(self) -> str:
        return f"<child run {self.run_id} of {self.workflow.name}>"


def child_run_id(parent: str, position: str) -> str:
    """Deterministic, so a replayed start finds the run it created (and never starts a second)."""
    candidate = f"{parent}.c{position.replace('/', '.')}"
    if len(candidate) <= 128:
        return candidate
    return "c" + hashlib.blake2b(candidate.encode(), digest_size=16).hexdigest()


class StartChild(Generic[T]):
    """Starting one child run: a step whose checkpoint is the child's run id."""

    def __init__(
        self, frame: Frame, workflow: Workflow[Any, T], input: dict[str, Any] | None, poll: float
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise ConfigError(f"start_child needs a @workflow, got {workflow!r}")
        self.frame = frame
        self.workflow = workflow
        self.input = workflow.validate_input(input)
        self.position, index = frame.next_step()
        self.name = f"child:{workflow.name}"
        self.step_id = f"start:{workflow.name}#{index}"
        self.args_hash = serde.fast_hash([workflow.name, self.input])
        self.poll = poll

    def __await__(self) -> Generator[Any, None, ChildRun[T]]:
        return self._run().__await__()

    async def _run(self) -> ChildRun[T]:
        ctx = self.frame.ctx
        waits = ctx.waits
        if waits is None:
            raise ConfigError("this run has no wait service")
        recorded = ctx.checkpoints.get(self.position)
        if recorded is not None:
            if recorded.name == self.name and recorded.args_hash == self.args_hash:
                return ChildRun(recorded.result["run_id"], self.workflow, self.poll)
            what = f"recorded {recorded.name} at position {self.position}, code now starts {self.name}"
            if not ctx.lenient_replay:
                raise NonDeterminismError(recorded.step_id, what)
        run_id = child_run_id(ctx.run_id, self.position)
        lane = keys.ANY_VERSION if self.workflow.upgrade_safe else ctx.version
        run = NewRun(
            run_id=run_id, workflow=self.workflow.name, input=self.input, version=ctx.version,
            tenant=ctx.tenant, parent=ctx.run_id, lane=lane if lane != ctx.version else "",
        )  # fmt: skip
        waits.busy += 1
        try:
            await waits.backend.start_child(
                run, run.queued_event(self.workflow.secret_args), lane, self.workflow
            )
            checkpoint = {"v": 1, "name": self.name, "step_id": self.step_id, "args_hash": self.args_hash,
                          "result": {"run_id": run_id}}  # fmt: skip
            ctx.checkpoints[self.position] = Checkpoint(
                self.name, self.step_id, self.args_hash, {"run_id": run_id}
            )
            data = {"child_run_id": run_id, "workflow": self.workflow.name}
            await ctx.writer.commit(
                ev.CHILD_STARTED, self.step_id, data, ((OP_STEP, self.position, serde.dumps(checkpoint)),)
            )
        finally:
            waits.leave()
        return ChildRun(run_id, self.workflow, self.poll)


#: Seconds between checks of a child's status while its parent waits (covers a lost notice).
CHILD_POLL = 30.0


@overload
def wait_for_input(
    key: str,
    schema: type[T],
    *,
    timeout: timedelta | float | None = None,
    prompt: str = "",
    default: Any = _UNSET,
    secret: bool = False,
) -> InputCall[T]: ...
@overload
def wait_for_input(
    key: str, schema: None = None, *, timeout: timedelta | float | None = None, prompt: str = "",
    default: Any = _UNSET, secret: bool = False,
) -> InputCall[Any]: ...  # fmt: skip
def wait_for_input(
    key: str, schema: Any = None, *, timeout: timedelta | float | None = None, prompt: str = "",
    default: Any = _UNSET, secret: bool = False,
) -> InputCall[Any]:  # fmt: skip
    """Wait for a value supplied through ``POST /v1/runs/{id}/inputs/{key}`` (or ``outlast input``).

    ``schema``: a pydantic model or any type pydantic validates; its JSON Schema is published
    with the request and the value is validated before it is accepted. ``timeout``: after it the
    call raises InputTimeout, or returns ``default`` when one is given. ``secret``: the value (a
    password, an API key) shows as ``"[secret]"`` in ``input.received``, and its strings are
    masked in every later event of the run, as ``secret_args`` are.
    """
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigError(f"input key {key!r}: use 1-128 letters, digits, '_', '-', '.', ':'")
    frame = _body_frame("wait_for_input()")
    if frame is None:
        raise ConfigError(
            "wait_for_input() waits inside a workflow run; in tests use run_local(..., inputs={...})"
        )
    adapter = TypeAdapter(schema) if schema is not None else None
    seconds = _seconds(timeout, "wait_for_input timeout") if timeout is not None else None
    return InputCall(frame, key, adapter, seconds, str(prompt), default, bool(secret))


def sleep(duration: timedelta | float) -> Awaitable[None]:
    """Sleep durably: a restart does not shorten or lengthen it, and a long sleep frees the worker.

    Outside a run, or inside a component, it is a plain ``asyncio.sleep``.
    """
    seconds = _seconds(duration, "sleep duration")
    frame = current_frame.get()
    if frame is None or frame.step_id is not None:
        return asyncio.sleep(seconds)
    return SleepCall(frame, "sleep", seconds)


def start_child(workflow: Workflow[Any, T], input: dict[str, Any] | None = None) -> StartChild[T]:
    """Start ``workflow`` as a child run (its own run id and stream, linked to this run).

    Returns a :class:`ChildRun`; ``await child.result()`` waits for it without holding a worker.
    Cancelling this run cancels its children.
    """
    frame = _body_frame("start_child()")
    if frame is None:
        raise ConfigError("start_child() starts a run from inside a workflow run")
    return StartChild(frame, workflow, input, CHILD_POLL)


async def _start_and_wait(start: StartChild[T], wait: ChildWait[T]) -> T:
    child = await start
    wait.child = child.run_id
    return await wait


def run_child(workflow: Workflow[Any, T], input: dict[str, Any] | None = None) -> Coroutine[Any, Any, T]:
    """Start a child run and wait for its result (ChildFailed if it fails or is cancelled)."""
    start = start_child(workflow, input)
    wait: ChildWait[T] = ChildWait(start.frame, workflow, CHILD_POLL)  # both positions fixed now
    return _start_and_wait(start, wait)
