"""Recording a new run and dispatching it, as one transaction (starts and child runs share it)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from outlast.errors import StoreError
from outlast.store import keys, scripts
from outlast.store.base import NewRun
from outlast.store.redis import _guard, create_run_args

WORK_STREAM_MAXLEN = 100_000


class RunQueue:
    """Writes a run's record and ``run.queued`` event and puts it on its lane's work stream in one
    MULTI/EXEC, so no half-written run can exist (a child run is also listed on its parent)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(scripts.CREATE_RUN)
        self._script_loaded = False

    async def enqueue(self, run: NewRun, queued_event: bytes, lane: str) -> bool:
        """True when the run was created, False when it already existed (idempotent start)."""
        run_keys = keys.run_keys(run.run_id)
        args = create_run_args(run, queued_event)
        for _ in range(2):
            if not self._script_loaded:
                await _guard(self.redis.script_load(scripts.CREATE_RUN))
                self._script_loaded = True
            now_ms = int(time.time() * 1000)
            # EVALSHA (not the Script helper): a pipeline holding a Script re-checks SCRIPT EXISTS
            # on every execute, one more round trip per start.
            pipe = self.redis.pipeline(transaction=True)
            pipe.evalsha(self._create.sha, 2, run_keys.meta, run_keys.events, *args)
            pipe.xadd(
                keys.work_stream(lane), {"run": run.run_id}, maxlen=WORK_STREAM_MAXLEN, approximate=True
            )
            pipe.zadd(keys.RUNS_INDEX, {run.run_id: now_ms}, nx=True)
            pipe.zadd(keys.VERSIONS, {run.version: now_ms}, nx=True)
            if run.parent:
                pipe.sadd(keys.run_keys(run.parent).children, run.run_id)
            replies: list[Any] = await _guard(pipe.execute(raise_on_error=False))
            if not isinstance(replies[0], redis_errors.NoScriptError):
                break
            # The server restarted and lost its scripts: the queue entry just written points at
            # no run (workers drop it); load the script and start again.
            self._script_loaded = False
        if isinstance(replies[0], Exception):
            raise StoreError(f"starting run {run.run_id} failed: {replies[0]}")
        return bool(replies[0])
