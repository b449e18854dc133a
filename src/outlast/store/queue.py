"""Recording a new run and dispatching it, in one script (starts and child runs share it)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from outlast import serde
from outlast.store import keys, scripts
from outlast.store.base import NewRun
from outlast.store.commands import HotPath
from outlast.store.errors import guard

WORK_STREAM_MAXLEN = 100_000


def create_run_args(run: NewRun, queued_event: bytes, *more: Any) -> list[Any]:
    """ARGV of the CREATE_RUN script (its KEYS are the run's meta and events); ``more`` goes
    between the fixed arguments and the extra meta fields (START's own arguments)."""
    pairs = [item for pair in run.meta_fields().items() for item in pair]
    return [
        run.run_id, run.workflow, run.version, run.tenant, serde.dumps(run.input),
        repr(time.time()), queued_event, *more, *pairs,
    ]  # fmt: skip


class RunQueue:
    """Writes a run's record and ``run.queued`` event and puts it on its lane's work stream in one
    script (``START``), so no half-written run can exist (a child run is also listed on its
    parent)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._start = redis.register_script(scripts.START)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._hot = HotPath(redis)

    async def enqueue(self, run: NewRun, queued_event: bytes, lane: str) -> bool:
        """True when the run was created, False when it already existed (idempotent start)."""
        run_keys = keys.run_keys(run.run_id)
        script_keys = [run_keys.meta, run_keys.events, keys.work_stream(lane), keys.RUNS_INDEX, keys.VERSIONS]
        if run.tenant:
            script_keys.append(keys.tenant_runs_index(run.tenant))
        if run.parent:
            script_keys.append(keys.run_keys(run.parent).children)
        args = create_run_args(run, queued_event, int(time.time() * 1000), WORK_STREAM_MAXLEN)
        # A script the server lost (a restart) is loaded and called again: nothing was written.
        created: int = await guard(self._hot.script(self._start, script_keys, args))
        return bool(created)

    async def requeue(self, stream: str, entry_id: bytes, consumer: str, run_id: str) -> bool:
        """Put ``run_id`` back on ``stream`` for another worker and ack the entry ``consumer`` read
        it from, if that entry is still ``consumer``'s (False when another worker took it)."""
        args: list[Any] = [keys.WORK_GROUP, entry_id, consumer, run_id, WORK_STREAM_MAXLEN]
        requeued: int = await guard(self._requeue(keys=[stream], args=args))
        return bool(requeued)

    async def add(self, stream: str, run_id: str) -> None:
        """One more entry for ``run_id`` on ``stream`` (a hand-off), trimmed as START trims."""
        await guard(self.redis.xadd(stream, {"run": run_id}, maxlen=WORK_STREAM_MAXLEN, approximate=True))
