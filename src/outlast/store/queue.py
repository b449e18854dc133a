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
        self._hot = HotPath(redis)

    async def enqueue(self, run: NewRun, queued_event: bytes, lane: str) -> bool:
        """True when the run was created, False when it already existed (idempotent start)."""
        run_keys = keys.run_keys(run.run_id)
        script_keys = [run_keys.meta, run_keys.events, keys.work_stream(lane), keys.RUNS_INDEX, keys.VERSIONS]
        if run.parent:
            script_keys.append(keys.run_keys(run.parent).children)
        args = create_run_args(run, queued_event, int(time.time() * 1000), WORK_STREAM_MAXLEN)
        # A script the server lost (a restart) is loaded and called again: nothing was written.
        created: int = await guard(self._hot.script(self._start, script_keys, args))
        return bool(created)
