"""Recording a new run and dispatching it (starts and child runs share it).

On one server a start is one script (``START``): the run's record and ``run.queued`` event, its
work-stream entry, its index entries and its parent's children set, all at once. In a Redis
Cluster those keys live in different hash slots (no script may span them), so a start takes four
steps: (0) the run index entries (``INDEX_RUN``, at once), (1) ``CREATE_PENDING`` on the run's
slot, (2) the work-stream entry (``ADD_ENTRY``, or the fair queue's ``PUSH``), (3) one pipelined
round trip with the version, the parent's children set (the index entries again if the start was
slow: :data:`REINDEX_AFTER`) and the ``dispatched`` marker in the run's meta hash. Steps 0-2 go
over the hot path's multiplexed connections (scripts for that reason), so a cluster start costs
its starter about the CPU it did in two steps. The index comes first so that a run always leaves a
trace a sweeper finds without scanning all runs: a process that dies between the steps leaves
either an index entry without a run (removed) or a run without the marker (dispatched again if
never claimed, its step (3) written either way) — see :mod:`outlast.worker.sweep`. A retried start
of the same run (a child's replay, an idempotency key) finds it unmarked and never claimed and
dispatches it at once. A duplicate work-stream entry is harmless: the second claim finds the run
held or ended.

The stream is one of the lane's partitions; a run with a fairness key is queued behind its key in
its partition (:mod:`outlast.store.fair`): ``START_FAIR`` on one server, the one-slot ``PUSH`` as
the enqueue step in a cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from outlast import serde
from outlast.store import fair_scripts, keys, scripts
from outlast.store.base import NewRun
from outlast.store.client import RedisClient, is_cluster, register_script
from outlast.store.commands import HotPath
from outlast.store.errors import guard
from outlast.store.fair import BELL_MS, Fairness, FairQueues, Partitions

WORK_STREAM_MAXLEN = 100_000
#: The meta field a cluster start writes last (step 3): its start is complete. The single-server
#: ``START`` does not write it (one script: a run either exists whole or not at all).
DISPATCHED = "dispatched"
#: Seconds between a cluster start's index step and its dispatch beyond which the start writes its
#: index entries again in its last step (the start sweeper's grace must stay above it).
REINDEX_AFTER = 1.0


def create_run_args(run: NewRun, queued_event: bytes, *more: Any) -> list[Any]:
    """ARGV of the CREATE_RUN script (its KEYS are the run's meta and events); ``more`` goes
    between the fixed arguments and the extra meta fields (START's own arguments)."""
    pairs = [item for pair in run.meta_fields().items() for item in pair]
    return [
        run.run_id, run.workflow, run.version, run.tenant, serde.dumps(run.input),
        repr(time.time()), queued_event, *more, *pairs,
    ]  # fmt: skip


class RunQueue:
    """Writes a run's record and ``run.queued`` event and puts it on its lane's work stream: in one
    script (``START``) on a single server, so no half-written run can exist (a child run is also
    listed on its parent); in four steps in a cluster (see the module docstring)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        #: Cluster mode: a start is split (the run's slot first, then the enqueue writes).
        self.split = is_cluster(redis)
        self._start = register_script(redis, scripts.START)
        self._create = register_script(redis, scripts.CREATE_PENDING)
        self._requeue = register_script(redis, scripts.REQUEUE)
        self._mark = register_script(redis, scripts.MARK_DISPATCHED)
        self._index = register_script(redis, scripts.INDEX_RUN)
        self._add_entry = register_script(redis, scripts.ADD_ENTRY)
        self._hot = HotPath(redis)
        self.partitions = Partitions(redis)
        self.fair = FairQueues(redis, WORK_STREAM_MAXLEN)
        self._start_fair = register_script(redis, fair_scripts.START_FAIR)

    async def enqueue(
        self, run: NewRun, queued_event: bytes, lane: str, fairness: Fairness | None = None
    ) -> bool:
        """True when the run was created, False when it already existed (idempotent start).

        The run goes on one of its lane's partitions; with ``fairness``, behind its key in the
        key's partition (the pump moves it on: :mod:`outlast.store.fair`)."""
        stream = await self.partitions.stream_for(lane, fairness.key if fairness else "")
        if fairness is not None:
            run = dataclasses.replace(run, fairness_key=fairness.key, queue=stream)
        run_keys = keys.run_keys(run.run_id)
        now_ms = int(time.time() * 1000)
        if self.split:
            began = time.monotonic()
            await self.index(run.run_id, now_ms, run.tenant)  # (0) first: the sweeper's way in
            args = create_run_args(run, queued_event)
            reply: int = await guard(self._hot.script(self._create, [run_keys.meta, run_keys.events], args))
            if reply:  # created, or recorded by a start that may have died before dispatching it
                await self.dispatch(
                    run.run_id,
                    lane,
                    version=run.version,
                    created_ms=now_ms,
                    tenant=run.tenant,
                    parent=run.parent,
                    stream=stream,
                    fairness=fairness,
                    reindex=time.monotonic() - began > REINDEX_AFTER,
                )
            return reply == 1
        if fairness is not None:
            return await self._start_fairly(run, queued_event, stream, fairness, now_ms)
        script_keys = [run_keys.meta, run_keys.events, stream, keys.RUNS_INDEX, keys.VERSIONS]
        if run.tenant:
            script_keys.append(keys.tenant_runs_index(run.tenant))
        if run.parent:
            script_keys.append(keys.run_keys(run.parent).children)
        args = create_run_args(run, queued_event, now_ms, WORK_STREAM_MAXLEN)
        # A script the server lost (a restart) is loaded and called again: nothing was written.
        created: int = await guard(self._hot.script(self._start, script_keys, args))
        return bool(created)

    async def _start_fairly(
        self, run: NewRun, queued_event: bytes, stream: str, fairness: Fairness, now_ms: int
    ) -> bool:
        """START_FAIR (one server): START with the run queued behind its fairness key."""
        run_keys = keys.run_keys(run.run_id)
        partition, *fair_keys = self.fair.push_keys(stream, fairness.key)
        script_keys = [run_keys.meta, run_keys.events, partition, keys.RUNS_INDEX, keys.VERSIONS, *fair_keys]
        if run.tenant:
            script_keys.append(keys.tenant_runs_index(run.tenant))
        if run.parent:
            script_keys.append(keys.run_keys(run.parent).children)
        more = [now_ms, WORK_STREAM_MAXLEN, *self.fair.push_args(fairness), BELL_MS]
        created: int = await guard(
            self._hot.script(self._start_fair, script_keys, create_run_args(run, queued_event, *more))
        )
        return bool(created)

    async def index(self, run_id: str, created_ms: int, tenant: str = "") -> None:
        """Step (0) of a cluster start: the run index entries (score ``created_ms``, kept if
        present), at once, over the hot path (``INDEX_RUN``: a plain cluster command or pipeline
        costs redis-py's cluster client more CPU than the script over the multiplexer)."""
        write = self._hot.script(self._index, [keys.RUNS_INDEX], [created_ms, run_id])
        if not tenant:
            await guard(write)
            return
        tenant_write = self._hot.script(self._index, [keys.tenant_runs_index(tenant)], [created_ms, run_id])
        replies: tuple[Any, Any] = await guard(asyncio.gather(write, tenant_write))
        del replies

    async def dispatch(
        self, run_id: str, lane: str, *, version: str, created_ms: int, tenant: str = "", parent: str = "",
        repair: bool = False, stream: str | None = None, fairness: Fairness | None = None,
        reindex: bool = True, swept: bool = False,
    ) -> None:  # fmt: skip
        """Steps (2) and (3) of a recorded run (cluster mode): its work-stream entry, then
        :meth:`finish`. ``repair``: a retried start of a run never claimed; nothing is done if
        the run is marked ``dispatched`` (the last write, so its entry exists: only a start that
        died halfway is dispatched again). ``stream``: the partition (default: the lane's first);
        with ``fairness``, the run is queued behind its key there (``PUSH``). ``reindex``,
        ``swept``: see :meth:`finish`."""
        if repair and await guard(self.redis.hget(keys.run_keys(run_id).meta, DISPATCHED)) is not None:
            return
        stream = stream or keys.work_stream(lane)
        if fairness is not None:
            await self.fair.push(stream, run_id, fairness)
        else:  # (over the hot path, as step 0)
            await guard(self._hot.script(self._add_entry, [stream], [WORK_STREAM_MAXLEN, run_id]))
        await self.finish(
            run_id, version=version, created_ms=created_ms, tenant=tenant, parent=parent, reindex=reindex,
            swept=swept,
        )  # fmt: skip

    async def finish(
        self, run_id: str, *, version: str, created_ms: int, tenant: str = "", parent: str = "",
        reindex: bool = True, swept: bool = False,
    ) -> None:  # fmt: skip
        """Step (3) of a cluster start, in one pipelined round trip (one per node it spans): its
        version, its place in its parent's children, with ``reindex`` its index entries again
        (``NX``: a start slower than :data:`REINDEX_AFTER` may have had them removed by a sweeper
        before its run was recorded; each write costs the starter CPU, so a fast start skips
        them), and the ``dispatched`` marker in its meta hash last (the run's start is
        complete). Idempotent. ``swept``: a run found
        by the start sweeper, which may expire meanwhile: the marker is then a script of its own
        that writes it only if the run exists (a start's own run was recorded a moment ago)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(keys.VERSIONS, {version: created_ms}, nx=True)
        if parent:
            pipe.sadd(keys.run_keys(parent).children, run_id)
        if reindex:
            pipe.zadd(keys.RUNS_INDEX, {run_id: created_ms}, nx=True)
            if tenant:
                pipe.zadd(keys.tenant_runs_index(tenant), {run_id: created_ms}, nx=True)
        if not swept:
            pipe.hset(keys.run_keys(run_id).meta, DISPATCHED, "1")
        replies: list[Any] = await guard(pipe.execute())
        del replies
        if swept:
            await guard(self._hot.script(self._mark, [keys.run_keys(run_id).meta], []))

    async def requeue(self, stream: str, entry_id: bytes, consumer: str, run_id: str) -> bool:
        """Put ``run_id`` back on ``stream`` for another worker and ack the entry ``consumer`` read
        it from, if that entry is still ``consumer``'s (False when another worker took it)."""
        args: list[Any] = [keys.WORK_GROUP, entry_id, consumer, run_id, WORK_STREAM_MAXLEN]
        requeued: int = await guard(self._requeue(keys=[stream], args=args))
        return bool(requeued)

    async def add(self, stream: str, run_id: str) -> None:
        """One more entry for ``run_id`` on ``stream`` (a hand-off), trimmed as START trims."""
        await guard(self.redis.xadd(stream, {"run": run_id}, maxlen=WORK_STREAM_MAXLEN, approximate=True))
