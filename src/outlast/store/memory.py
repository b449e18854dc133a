"""An in-process store with the same semantics as RedisStore, for unit tests of user code.

Nothing survives the process: use it to run workflows in tests without a server
(:func:`outlast.run_local`), never for durability.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from outlast import events as ev
from outlast import serde
from outlast.errors import ProtocolViolation, RunEnded, RunNotFound, RunWaiting, StaleAttemptError
from outlast.store.base import (
    OP_ADD,
    OP_META,
    OP_OBJECT,
    OP_STEP,
    OP_WAIT,
    AppendItem,
    AttemptStart,
    NewRun,
    RunRecord,
)


@dataclass
class _Run:
    meta: dict[str, str]
    events: list[tuple[int, bytes]] = field(default_factory=list)
    steps: dict[str, bytes] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    waits: dict[str, bytes] = field(default_factory=dict)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class MemoryStore:
    """Runs in a dict. Same fencing, idempotency and reading rules as the Redis store."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._changed = asyncio.Condition()

    def wait_backend(self) -> None:
        """None: a Runner on this store settles waits in process (see :func:`outlast.run_local`)."""
        return None

    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(f"no run {run_id!r}") from None

    async def create_run(self, run: NewRun, queued_event: bytes) -> bool:
        if run.run_id in self._runs:
            return False
        now = repr(time.time())
        meta = {
            "v": "1", "run_id": run.run_id, "workflow": run.workflow, "version": run.version,
            "tenant": run.tenant, "input": serde.dumps(run.input).decode(), "status": ev.RunStatus.QUEUED,
            "attempt": "0", "last_seq": "1", "created_at": now, "updated_at": now, **run.meta_fields(),
        }  # fmt: skip
        self._runs[run.run_id] = _Run(meta=meta, events=[(1, queued_event)])
        await self._notify()
        return True

    async def begin_attempt(self, run_id: str, expected: int | None = None) -> AttemptStart:
        run = self._run(run_id)
        if run.meta["status"] in ev.TERMINAL_STATUSES:
            raise RunEnded(run_id, run.meta["status"])
        if run.meta["status"] == ev.RunStatus.WAITING:
            raise RunWaiting(run_id)
        current = int(run.meta["attempt"])
        if expected is not None and expected != current:
            raise StaleAttemptError(run_id, expected, current)
        now = repr(time.time())
        run.meta.update(attempt=str(current + 1), status=ev.RunStatus.RUNNING, started_at=now, updated_at=now)
        return AttemptStart(attempt=current + 1, last_seq=int(run.meta["last_seq"]))

    async def append(self, run_id: str, attempt: int, items: Sequence[AppendItem]) -> int:
        run = self._run(run_id)
        current = int(run.meta["attempt"])
        if current != attempt:
            raise StaleAttemptError(run_id, attempt, current)
        last = int(run.meta["last_seq"])
        try:
            for item in items:
                if item.seq <= last:
                    continue
                if item.seq != last + 1:
                    raise ProtocolViolation(f"run {run_id}: append of seq {item.seq} after {last}")
                run.events.append((item.seq, item.payload))
                last = item.seq
                for op, a, b in item.ops:
                    if op == OP_META:
                        run.meta[a] = _text(b)
                    elif op == OP_STEP:
                        run.steps[a] = _bytes(b)
                    elif op == OP_OBJECT:
                        run.objects[a] = _bytes(b)
                    elif op == OP_WAIT:
                        run.waits[a] = _bytes(b)
                    elif op == OP_ADD:
                        run.meta[a] = repr(float(run.meta.get(a, 0)) + float(_text(b)))
        finally:
            # Also after a gap: what was written before it is kept, and readers are woken for it
            # (as the script does).
            run.meta.update(last_seq=str(last), updated_at=repr(time.time()))
            await self._notify()
        return last

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # An unknown run's hashes read as empty, as missing keys do in Redis.

    async def load_steps(self, run_id: str) -> dict[str, bytes]:
        run = self._runs.get(run_id)
        return dict(run.steps) if run else {}

    async def load_objects(self, run_id: str) -> dict[str, Any]:
        run = self._runs.get(run_id)
        return {k: serde.loads(v) for k, v in run.objects.items()} if run else {}

    async def load_waits(self, run_id: str) -> dict[str, bytes]:
        run = self._runs.get(run_id)
        return dict(run.waits) if run else {}

    async def get_run(self, run_id: str) -> RunRecord:
        return RunRecord.from_hash(dict(self._run(run_id).meta))

    async def read_events(
        self, run_id: str, after: int = 0, *, follow: bool = True, block_ms: int = 5_000
    ) -> AsyncIterator[ev.Event]:
        run = self._run(run_id)
        cursor = after
        while True:
            fresh = (ev.Event.model_validate_json(payload) for seq, payload in run.events if seq > cursor)
            batch, cursor, terminal = ev.contiguous(cursor, fresh, partial(ev.gap_event, run_id))
            for event in batch:
                yield event
            if terminal:
                return
            if not follow or ev.ended(run.meta["status"], int(run.meta["last_seq"]), cursor):
                return  # nothing more can come (the rule every reader follows)
            async with self._changed:
                if int(run.meta["last_seq"]) <= cursor:
                    await self._changed.wait()
