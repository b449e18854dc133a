"""The waits of one attempt, and when the attempt suspends.

A wait primitive (:mod:`outlast.core.waiting`) that is not settled yet records the wait and
blocks on a future here. The attempt's watcher settles those futures (a settled wait's
checkpoint appears in the store; a deadline passes while held in memory) and decides when to
*suspend*: every branch of the body is blocked on a wait (no component runs, no wait is being
recorded) and the soonest deadline is more than ``hold`` seconds away. Suspending cancels the
body and parks the run with one fenced script; the next attempt replays to the same waits.

A run blocked on child runs alone lingers, if its worker has a free slot: it suspends only once
``hold`` seconds have passed with no wait recorded or settled. A fan-out's children end one
after another; each ending seen by a suspended parent would re-queue it and replay all its
checkpoints (N children, N replays of up to N steps), while a lingering parent takes them as
they come (its worker is told of each at once through the settled channel).

Workflow code outside components that awaits other things (a raw ``asyncio.sleep`` next to a
wait in a gather) may be cut short by a suspension and runs again on resume, as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outlast import serde
from outlast.core.component import checkpoint_from_json
from outlast.core.context import Checkpoint
from outlast.errors import ConfigError, NonDeterminismError
from outlast.store.base import OP_STEP, OP_WAIT, AppendItem, NewRun, WaitBackend

if TYPE_CHECKING:
    from outlast.core.context import RunContext
    from outlast.core.runner import Runner
    from outlast.core.waiting import WaitCall
    from outlast.core.workflow import Workflow


def checkpoint_json(record: dict[str, Any], result: Any, announced: bool = True) -> bytes:
    """A settled wait's checkpoint (the same shape RESOLVE writes)."""
    return serde.dumps(
        {"v": 1, "name": record["name"], "step_id": record["step_id"],
         "args_hash": record.get("args_hash", ""), "result": result, "announced": announced}
    )  # fmt: skip


@dataclass
class _Pending:
    future: asyncio.Future[bytes]
    due: float | None  # loop time when its deadline passes (None: no deadline)


class WaitSet:
    """The pending waits of one attempt and the watcher that settles them or suspends the run."""

    def __init__(
        self,
        ctx: RunContext,
        backend: WaitBackend,
        records: dict[str, dict[str, Any]],
        *,
        hold: float,
        poll_interval: float,
        on_suspend: Callable[[], None],
        spare_slot: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ctx = ctx
        self.backend = backend
        #: Waits recorded by this run (loaded at claim, added as they are recorded).
        self.records = records
        self.hold = hold
        self.poll_interval = poll_interval
        self.on_suspend = on_suspend
        self.spare_slot = spare_slot
        self.pending: dict[str, _Pending] = {}
        #: Work in flight that is not blocked on a wait (running components, waits being recorded).
        self.busy = 0
        #: Suspend as soon as the body is quiescent, whatever the deadlines (a worker draining).
        self.suspend_now = False
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        #: Loop time of the last wait settled, or of the body's last busy spell ending (a
        #: component, or the recording of a wait: see leave()); a fan-out parent lingers
        #: ``hold`` from there.
        self._active_at = 0.0

    def _ensure_watching(self) -> None:
        # Started by the first wait: runs that never wait pay nothing for the watcher.
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self.watch(), name=f"outlast-waits-{self.ctx.run_id}")

    async def stop(self) -> None:
        """Stop the watcher (the attempt ended)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def poke(self) -> None:
        self._changed.set()

    def leave(self) -> None:
        """A busy section ended (a component returned)."""
        self.busy -= 1
        if self.busy == 0:
            self._active_at = asyncio.get_running_loop().time()  # a fan-out parent lingers from here
            if self.pending:
                self._changed.set()

    def reset(self) -> None:
        """The body is run again (woken while suspending): its waits will be awaited afresh."""
        self.pending.clear()
        self.busy = 0
        self._changed.clear()

    # -- the primitive's side -------------------------------------------------------------------

    async def wait(self, call: WaitCall[Any]) -> Checkpoint:
        """The settled checkpoint of ``call``'s wait, recording the wait first if it is new."""
        ctx = self.ctx
        recorded = ctx.checkpoints.get(call.position)
        if recorded is not None:
            if recorded.name != call.name and not ctx.lenient_replay:
                what = f"recorded {recorded.name} at position {call.position}, code now waits on {call.name}"
                raise NonDeterminismError(recorded.step_id, what)
            if recorded.name == call.name:
                if not recorded.announced:
                    await self._announce(call, recorded)
                return recorded
        loop = asyncio.get_running_loop()
        self.busy += 1
        try:
            record = self.records.get(call.position)
            early: bytes | None = None
            due: float | None = None
            if record is None:
                record = call.record()
                record.update(v=1, name=call.name, step_id=call.step_id, created=time.time())
                if call.delay is not None:
                    # Armed before the wait is recorded: a crash in between leaves a harmless timer.
                    now_ms, due_ms = await self.backend.arm(ctx.run_id, call.position, call.delay)
                    if call.kind != "child":
                        record["deadline"] = due_ms
                        due = loop.time() + (due_ms - now_ms) / 1000
                self.records[call.position] = record
                data = call.requested_data(record)
                await ctx.writer.commit(
                    call.requested_event, call.step_id, data, ((OP_WAIT, call.position, serde.dumps(record)),)
                )
                early = await self.backend.registered(ctx.run_id, call.position, record)
            elif record.get("deadline"):
                due = loop.time() + (int(record["deadline"]) - await self.backend.server_ms()) / 1000
            pending = _Pending(loop.create_future(), due)
            self.pending[call.position] = pending
            self._ensure_watching()
            if early is not None:
                pending.future.set_result(early)
        finally:
            self.leave()
        try:
            raw = await pending.future
        finally:
            self.pending.pop(call.position, None)
        checkpoint = checkpoint_from_json(raw)
        ctx.checkpoints[call.position] = checkpoint
        if not checkpoint.announced:
            await self._announce(call, checkpoint)
        return checkpoint

    async def _announce(self, call: WaitCall[Any], checkpoint: Checkpoint) -> None:
        """Write the settled wait's event (RESOLVE could not: an attempt was live)."""
        event_type, data = call.settled_event(checkpoint.result)
        record = {"name": checkpoint.name, "step_id": checkpoint.step_id, "args_hash": checkpoint.args_hash}
        announced = checkpoint_json(record, checkpoint.result, True)
        # Marked before the commit is awaited: a body cancelled meanwhile (suspending) and run
        # again must not announce it twice. Busy: the attempt must not suspend under the write.
        self.ctx.checkpoints[call.position] = checkpoint_from_json(announced)
        self.busy += 1
        try:
            await self.ctx.writer.commit(
                event_type, call.step_id, data, ((OP_STEP, call.position, announced),)
            )
        finally:
            self.leave()

    # -- the watcher ----------------------------------------------------------------------------

    def _settle(self, found: dict[str, bytes]) -> bool:
        settled = False
        for position, raw in found.items():
            pending = self.pending.get(position)
            if pending is not None and not pending.future.done():
                pending.future.set_result(raw)
                settled = True
        if settled:
            self._active_at = asyncio.get_running_loop().time()
        return settled

    async def watch(self) -> None:
        """Settle pending waits; call ``on_suspend`` (and return) when the attempt should suspend."""
        loop = asyncio.get_running_loop()
        run_id = self.ctx.run_id
        while True:
            if not self.pending:
                await self._changed.wait()
                self._changed.clear()
                continue
            for _ in range(3):  # let the body run on until every branch blocks
                await asyncio.sleep(0)
            if self._changed.is_set():
                self._changed.clear()
                continue
            if self._settle(await self.backend.resolutions(run_id, list(self.pending))):
                continue
            now = loop.time()
            due = [pos for pos, p in self.pending.items() if p.due is not None and p.due <= now]
            for position in due:
                raw = await self.backend.fire(run_id, position)
                if raw is not None:
                    self._settle({position: raw})
            if due:
                continue
            blocked = {pos: p for pos, p in self.pending.items() if not p.future.done()}
            if not blocked:
                continue  # settled meanwhile: the body goes on
            soonest = min((p.due for p in blocked.values() if p.due is not None), default=None)
            far = soonest is None or soonest - now > self.hold
            linger_until = self._active_at + self.hold
            lingering = (
                not self.suspend_now
                and now < linger_until
                and all(self.records.get(pos, {}).get("kind") == "child" for pos in blocked)
                and self.spare_slot()
            )
            if (
                self.backend.can_suspend
                and self.busy == 0
                and not self._changed.is_set()
                and (far or self.suspend_now)
                and not lingering
            ):
                self.on_suspend()
                return
            timeout = self.poll_interval
            if soonest is not None:
                timeout = min(timeout, max(0.0, soonest - now))
            if lingering:
                timeout = min(timeout, linger_until - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()

    def blocked(self) -> list[str]:
        """Positions of the waits the body is blocked on (not settled)."""
        return [position for position, p in self.pending.items() if not p.future.done()]

    def summary(self, positions: list[str]) -> list[dict[str, Any]]:
        """What the waits at ``positions`` are (the ``run.waiting`` event's data)."""
        shown = []
        for position in positions:
            record = self.records.get(position, {})
            entry = {"position": position, "kind": record.get("kind"), "step": record.get("step_id")}
            for name in ("key", "child"):
                if record.get(name) is not None:
                    entry[name] = record[name]
            if record.get("deadline"):
                entry["deadline"] = record["deadline"] / 1000  # seconds, like every event's times
            shown.append(entry)
        return shown


class LocalWaits:
    """Waits for :func:`outlast.run_local` (unit tests): nothing suspends and time is not waited.

    Durable sleeps end at once, inputs come from ``inputs`` (a missing one times out at once if
    it has a timeout, else is a ConfigError naming it) and child runs execute inline.
    """

    can_suspend = False

    def __init__(self, runner: Runner, inputs: dict[str, Any] | None = None) -> None:
        self.runner = runner
        self.inputs = dict(inputs or {})

    async def arm(self, run_id: str, position: str, delay: float) -> tuple[int, int]:
        now = int(time.time() * 1000)
        return now, now

    async def server_ms(self) -> int:
        return int(time.time() * 1000)

    async def resolutions(self, run_id: str, positions: Sequence[str]) -> dict[str, bytes]:
        return {}

    async def fire(self, run_id: str, position: str) -> bytes | None:
        return None

    async def suspend(self, run_id: str, attempt: int, item: AppendItem, positions: Sequence[str]) -> str:
        raise ConfigError("run_local runs do not suspend")

    async def registered(self, run_id: str, position: str, record: dict[str, Any]) -> bytes | None:
        kind = record["kind"]
        if kind == "sleep":
            return checkpoint_json(record, None, False)
        if kind == "input":
            key = record["key"]
            if key in self.inputs:
                return checkpoint_json(record, {"value": self.inputs[key]}, False)
            if record.get("deadline") is None:
                raise ConfigError(
                    f"run_local: the workflow waits for input {key!r}; pass inputs={{{key!r}: ...}}"
                )
            return checkpoint_json(record, {"timed_out": True}, False)
        child = await self.runner.store.get_run(record["child"])
        outcome = {
            "run_id": child.run_id,
            "status": child.status,
            "result": child.result,
            "error": child.error,
        }
        return checkpoint_json(record, outcome, False)

    async def start_child(
        self, run: NewRun, queued_event: bytes, lane: str, workflow: Workflow[Any, Any]
    ) -> None:
        if await self.runner.store.create_run(run, queued_event):
            await self.runner.execute(workflow, run.run_id)

    async def child_ended(self, parent: str, child: str) -> bool:
        return True
