"""A worker's upkeep: lease news from the heartbeat thread, cancel and settled-wait notices, and
the beat loop (reports, takeover scans, stranded entries, due timers, on a cluster the start
sweep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from redis import exceptions as redis_errors

from outlast.errors import OutlastError
from outlast.events import Reason
from outlast.store import keys
from outlast.store.client import RedisClient, is_cluster
from outlast.store.commands import server_ms
from outlast.store.durability import CommitWait
from outlast.store.errors import guard
from outlast.store.pubsub import subscription
from outlast.store.queue import RunQueue
from outlast.store.waits import RedisWaits
from outlast.worker.bookkeeping import Bookkeeping
from outlast.worker.heartbeat import Held, Renewal
from outlast.worker.jobs import STARTED, Job, Lane
from outlast.worker.sweep import StartSweep

log = logging.getLogger("outlast.worker")

#: Seconds before the notice listener (cancels, settled waits) subscribes again after losing Redis.
NOTICE_RETRY = 1.0

#: Claim a run of a lane (found by a takeover scan): STARTED, SETTLED or SKIPPED.
ClaimFn = Callable[[Lane, str], Awaitable[str]]
#: Dispatch a batch of (lane, entry id, run id) read from the work streams.
DispatchFn = Callable[[list[tuple[Lane, bytes, str]]], Awaitable[None]]


class Upkeep:
    """Everything a worker does besides dispatching and executing runs, on the jobs it shares."""

    def __init__(
        self,
        redis: RedisClient,
        waits: RedisWaits,
        *,
        worker_id: str,
        version: str,
        served: tuple[str, ...],
        digest: str,
        concurrency: int,
        heartbeat: float,
        lease_ms: int,
        lanes: list[Lane],
        jobs: dict[str, Job],
        stopping: asyncio.Event,
        books: Bookkeeping,
        claim: ClaimFn,
        dispatch: DispatchFn,
        unserved: Callable[[str], bool],
        read_lanes: Callable[[], list[Lane]] | None = None,
        commit_wait: CommitWait | None = None,
    ) -> None:
        """``jobs``: the worker's runs (read here, owned by the worker); ``stopping``: set when it
        drains; ``served``/``digest``: the workflows its code has (reported); ``claim`` and
        ``dispatch``: the worker's, for orphans and stranded entries; ``unserved``: whether a run
        is known to be of a workflow the worker's code lacks (a takeover scan looks past it);
        ``read_lanes``: every partition lane the worker reads (default: ``lanes``);
        ``commit_wait``: its store's setting, reported with its shortfalls."""
        self.redis = redis
        self.commit_wait = commit_wait
        self.waits = waits
        self.worker_id = worker_id
        self.version = version
        self.served = served
        self.digest = digest
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.lease_ms = lease_ms
        self.lanes = lanes
        self.jobs = jobs
        self.stopping = stopping
        self.books = books
        self.claim = claim
        self.dispatch = dispatch
        self.unserved = unserved
        self.read_lanes = read_lanes or (lambda: self.lanes)
        #: Orphans wait for a slot: the worker's next free one goes to a takeover scan.
        self.takeover_wanted = False
        #: The worker's loop (news from other threads are handed to it); set by ``bind``.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        #: Cluster mode: finishes starts that died between their steps (outlast.worker.sweep).
        self.sweep: StartSweep | None = None
        if is_cluster(redis):
            self.sweep = StartSweep(redis, RunQueue(redis), worker_id=worker_id, every=heartbeat)

    def bind(self) -> None:
        """Take the running loop (call from it before the heartbeat thread starts)."""
        self.loop = asyncio.get_running_loop()

    # -- the heartbeat thread's side ----------------------------------------------------------

    def held(self) -> list[Held]:
        """The leases the heartbeat thread renews (launched runs hold their own)."""
        return [
            Held(job.run_id, job.attempt_no, job.lane.index)
            for job in list(self.jobs.values())
            if not job.launched
        ]

    def renewed(self, renewals: list[Renewal]) -> None:
        """Called from the heartbeat thread."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._on_renewals, renewals)

    def _on_renewals(self, renewals: list[Renewal]) -> None:
        for renewal in renewals:
            job = self.jobs.get(renewal.held.run_id)
            if job is None or job.attempt_no != renewal.held.attempt:
                continue
            if not renewal.ok:
                log.warning(
                    "worker %s: lost the lease on run %s (attempt %s); abandoning it", self.worker_id,
                    job.run_id, job.attempt_no,
                )  # fmt: skip
                if job.task is not None:
                    job.task.cancel()
                continue
            if renewal.indexed:
                job.indexed = True
                if job.entry_id is not None:  # findable by a takeover now: the entry can go
                    self.books.ack(job.lane.stream, job.entry_id)
                    job.entry_id = None
            if renewal.cancel and job.attempt is not None:
                job.attempt.cancel(Reason.CANCELLED)

    # -- notices ------------------------------------------------------------------------------

    async def notices(self) -> None:
        """Cancel requests and settled waits of the runs held here, as they are published."""
        cancel_channel = keys.CANCEL_CHANNEL.encode()
        while True:
            try:
                async with subscription(self.redis, keys.CANCEL_CHANNEL, keys.SETTLED_CHANNEL) as pubsub:
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        job = self.jobs.get(message["data"].decode())
                        if job is None or job.attempt is None:
                            continue
                        if message["channel"] == cancel_channel:
                            job.attempt.cancel(Reason.CANCELLED)
                        else:
                            job.attempt.wake()
            except redis_errors.RedisError as exc:
                # Notices are hints: meanwhile the heartbeat sees cancels and attempts poll.
                log.warning("worker %s: notice listener lost Redis: %s (resubscribing)", self.worker_id, exc)
            await asyncio.sleep(NOTICE_RETRY)

    # -- the beat -----------------------------------------------------------------------------

    def timer_armed(self, delay: float) -> None:
        """A run here armed a timer: the beat loop re-plans when to wake (it may be due sooner)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake.set)

    async def beat(self) -> None:
        """Every heartbeat: report, re-read stranded entries; scan for orphans and due timers every
        beat and also right when the next lease or timer is due, so neither is late by a beat."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat
        while True:
            delay = next_beat - loop.time()
            try:
                due = await self._next_due_in()
            except OutlastError:
                due = None
            if due is not None:
                delay = min(delay, due + 0.005)
            self._wake.clear()
            woken = False
            with contextlib.suppress(TimeoutError):
                woken = await asyncio.wait_for(self._wake.wait(), max(0.0, delay))
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self.heartbeat
                    await self.report()
                    if not self.stopping.is_set():
                        await self.reclaim_unclaimed()
                        if self.sweep is not None:
                            await self.sweep.beat()
                    woken = False
                if not self.stopping.is_set() and not woken:  # (woken: a timer was armed, re-plan)
                    await self.takeover_scan()
                    await self.waits.fire_due()
            except OutlastError as exc:
                log.warning("worker %s: heartbeat: %s", self.worker_id, exc)

    async def _next_due_in(self) -> float | None:
        """Seconds until the earliest lease in our lanes expires or the earliest timer is due."""
        now_ms = await server_ms(self.redis)
        pipe = self.redis.pipeline(transaction=False)
        for lane in self.lanes:
            pipe.zrangebyscore(lane.index, now_ms, "+inf", start=0, num=1, withscores=True)
        pipe.zrange(keys.TIMERS, 0, 0, withscores=True)
        firsts: list[Any] = await guard(pipe.execute())
        scores = [float(first[0][1]) for first in firsts if first]
        if not scores:
            return None
        return max(0.0, (min(scores) - now_ms) / 1000)

    def info(self, now: float) -> dict[str, Any]:
        """What ``outlast workers`` shows; ``lease_timeout`` says when the entry is stale, and
        ``workflows``/``digest`` what code it runs (a worker of other code refuses to join).
        ``now``: the server's clock in seconds (liveness is judged on it, as leases are)."""
        info = {
            "id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "version": self.version,
            "running": sorted(self.jobs), "concurrency": self.concurrency, "heartbeat_at": now,
            "draining": self.stopping.is_set(), "lease_timeout": self.lease_ms / 1000,
            "workflows": list(self.served), "digest": self.digest,
        }  # fmt: skip
        wait = self.commit_wait
        if wait is not None and wait.enabled:
            # Commits whose WAIT/WAITAOF fell short (they stood on the master alone): a replica
            # or AOF that is not keeping up shows here, fleet-wide (``outlast workers``).
            info |= {"commit_wait": str(wait), "commit_wait_shortfalls": wait.shortfalls}
        return info

    async def report(self) -> None:
        """List this worker (and what it runs) in the workers hash (``outlast workers``)."""
        now = await server_ms(self.redis) / 1000
        await guard(self.redis.hset(keys.WORKERS, self.worker_id, json.dumps(self.info(now))))

    async def takeover_scan(self) -> bool:
        """Claim runs of this worker's lanes whose lease expired. True if any was taken over."""
        now_ms = await server_ms(self.redis)
        took = False
        for lane in self.lanes:
            free = self.concurrency - len(self.jobs)
            if free <= 0:
                # Full: remember that orphans wait, so the next free slot goes to one of them.
                waiting = await guard(self.redis.zcount(lane.index, 0, now_ms))
                self.takeover_wanted = self.takeover_wanted or bool(waiting)
                continue
            # Page on past runs this worker holds or cannot serve (their workflow is not in its
            # code): they stay listed for others, and must not hide the orphans behind them.
            start, page = 0, free + len(self.jobs)
            while len(self.jobs) < self.concurrency:
                expired = await guard(self.redis.zrangebyscore(lane.index, 0, now_ms, start=start, num=page))
                start += len(expired)  # (an entry that leaves the range meanwhile: next scan)
                for raw in expired:
                    run_id = raw.decode()
                    if run_id in self.jobs or self.unserved(run_id):
                        continue
                    if await self.claim(lane, run_id) == STARTED:  # (the worker logs the takeover)
                        took = True
                    if len(self.jobs) >= self.concurrency:
                        break
                if len(expired) < page:
                    break
        return took

    async def reclaim_unclaimed(self) -> None:
        """Dispatch entries a dead worker read but never claimed (its lease never existed)."""
        for lane in self.read_lanes():
            free = self.concurrency - len(self.jobs)
            if free <= 0:
                return
            reply = await guard(
                self.redis.xautoclaim(
                    lane.stream, keys.WORK_GROUP, self.worker_id, min_idle_time=self.lease_ms, count=free
                )
            )
            entries = [(lane, id_, (fields or {}).get(b"run", b"").decode()) for id_, fields in reply[1]]
            for _, entry_id, run_id in entries:
                if not run_id:  # a bell, or an entry without fields (the beat's pump does a bell's work)
                    self.books.ack(lane.stream, entry_id)
            await self.dispatch([entry for entry in entries if entry[2]])
