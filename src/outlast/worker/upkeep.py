"""The worker's upkeep: batched acks/index removals, lease news, the beat loop and takeover scans.

A mixin of :class:`outlast.worker.worker.Worker`, kept apart so each file reads as one concern;
the attributes below are the Worker's, declared for type checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from outlast.errors import OutlastError
from outlast.events import Reason
from outlast.store import keys
from outlast.store.commands import server_ms
from outlast.store.errors import guard
from outlast.store.waits import RedisWaits
from outlast.worker.heartbeat import Held, Renewal
from outlast.worker.jobs import STARTED, Job, Lane

log = logging.getLogger("outlast.worker")

#: Seconds a worker gathers acks and lease-index removals before sending them in one pipeline.
BOOKKEEPING_DELAY = 0.005
#: Seconds before the notice listener (cancels, settled waits) subscribes again after losing Redis.
NOTICE_RETRY = 1.0


class Upkeep:
    id: str
    redis: aioredis.Redis
    version: str
    concurrency: int
    heartbeat: float
    lease_ms: int
    lanes: list[Lane]
    jobs: dict[str, Job]
    served: tuple[str, ...]
    digest: str
    _acks: dict[str, list[Any]]
    _zrems: dict[str, list[Any]]
    _bookkeeping: asyncio.Event
    _stopping: asyncio.Event
    _takeover_wanted: bool
    _loop: asyncio.AbstractEventLoop | None
    _beat_wake: asyncio.Event
    waits: RedisWaits

    async def _try_claim(self, lane: Lane, run_id: str, entry_id: bytes | None = None) -> str:
        raise NotImplementedError  # Worker's

    async def _dispatch(self, batch: list[tuple[Lane, bytes, str]]) -> None:
        raise NotImplementedError  # Worker's

    # -- batched bookkeeping -------------------------------------------------------------------

    def _later(self, table: dict[str, list[Any]], key: str, member: Any) -> None:
        """Queue an XACK or a ZREM: one pipeline per loop turn serves every run that needs one."""
        table.setdefault(key, []).append(member)
        self._bookkeeping.set()

    async def _bookkeeping_loop(self) -> None:
        while True:
            await self._bookkeeping.wait()
            # Acks and index removals are not urgent (an unacked entry of a claimed run is only
            # re-read after a lease timeout): gathering them for a few ms takes their round trip
            # off the path of the runs finishing right now, and batches more of them per trip.
            await asyncio.sleep(BOOKKEEPING_DELAY)
            await self._flush_bookkeeping()

    async def _flush_bookkeeping(self) -> None:
        self._bookkeeping.clear()
        acks, zrems = self._acks, self._zrems
        self._acks, self._zrems = {}, {}
        if not acks and not zrems:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, entry_ids in acks.items():
            pipe.xack(stream, keys.WORK_GROUP, *entry_ids)
        for index, run_ids in zrems.items():
            pipe.zrem(index, *run_ids)
        try:
            replies: list[Any] = await guard(pipe.execute())
            del replies
        except OutlastError as exc:  # put them back; the next turn retries
            log.warning("worker %s: bookkeeping failed, retrying: %s", self.id, exc)
            for stream, entry_ids in acks.items():
                for entry_id in entry_ids:
                    self._later(self._acks, stream, entry_id)
            for index, run_ids in zrems.items():
                for run_id in run_ids:
                    self._later(self._zrems, index, run_id)
            await asyncio.sleep(self.heartbeat)

    # -- heartbeat side (main loop) ------------------------------------------------------------

    def _held(self) -> list[Held]:
        return [
            Held(job.run_id, job.attempt_no, job.lane.index)
            for job in list(self.jobs.values())
            if not job.launched
        ]

    def _renewed(self, renewals: list[Renewal]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_renewals, renewals)

    def _on_renewals(self, renewals: list[Renewal]) -> None:
        for renewal in renewals:
            job = self.jobs.get(renewal.held.run_id)
            if job is None or job.attempt_no != renewal.held.attempt:
                continue
            if not renewal.ok:
                log.warning(
                    "worker %s: lost the lease on run %s (attempt %s); abandoning it", self.id, job.run_id,
                    job.attempt_no,
                )  # fmt: skip
                if job.task is not None:
                    job.task.cancel()
                continue
            if renewal.indexed:
                job.indexed = True
                if job.entry_id is not None:  # findable by a takeover now: the entry can go
                    self._later(self._acks, job.lane.stream, job.entry_id)
                    job.entry_id = None
            if renewal.cancel and job.attempt is not None:
                job.attempt.cancel(Reason.CANCELLED)

    async def _notice_listener(self) -> None:
        """Cancel requests and settled waits of the runs held here, as they are published."""
        cancel_channel = keys.CANCEL_CHANNEL.encode()
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(keys.CANCEL_CHANNEL, keys.SETTLED_CHANNEL)
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
                log.warning("worker %s: notice listener lost Redis: %s (resubscribing)", self.id, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(NOTICE_RETRY)

    def _timer_armed(self, delay: float) -> None:
        """A run here armed a timer: the beat loop re-plans when to wake (it may be due sooner)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._beat_wake.set)

    async def _beat_loop(self) -> None:
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
            self._beat_wake.clear()
            woken = False
            with contextlib.suppress(TimeoutError):
                woken = await asyncio.wait_for(self._beat_wake.wait(), max(0.0, delay))
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self.heartbeat
                    await self._report()
                    if not self._stopping.is_set():
                        await self._reclaim_unclaimed()
                    woken = False
                if not self._stopping.is_set() and not woken:  # (woken: a timer was armed, re-plan)
                    await self._takeover_scan()
                    await self.waits.fire_due()
            except OutlastError as exc:
                log.warning("worker %s: heartbeat: %s", self.id, exc)

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

    def _info(self) -> dict[str, Any]:
        """What ``outlast workers`` shows; ``lease_timeout`` says when the entry is stale, and
        ``workflows``/``digest`` what code it runs (a worker of other code refuses to join)."""
        return {
            "id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "version": self.version,
            "running": sorted(self.jobs), "concurrency": self.concurrency, "heartbeat_at": time.time(),
            "draining": self._stopping.is_set(), "lease_timeout": self.lease_ms / 1000,
            "workflows": list(self.served), "digest": self.digest,
        }  # fmt: skip

    async def _report(self) -> None:
        await guard(self.redis.hset(keys.WORKERS, self.id, json.dumps(self._info())))

    async def _takeover_scan(self) -> bool:
        """Claim runs of this worker's lanes whose lease expired. True if any was taken over."""
        now_ms = await server_ms(self.redis)
        took = False
        for lane in self.lanes:
            free = self.concurrency - len(self.jobs)
            if free <= 0:
                # Full: remember that orphans wait, so the next free slot goes to one of them.
                waiting = await guard(self.redis.zcount(lane.index, 0, now_ms))
                self._takeover_wanted = self._takeover_wanted or bool(waiting)
                continue
            expired = await guard(
                self.redis.zrangebyscore(lane.index, 0, now_ms, start=0, num=free + len(self.jobs))
            )
            for raw in expired:
                run_id = raw.decode()
                if run_id in self.jobs:
                    continue
                if await self._try_claim(lane, run_id) == STARTED:  # (_start logs the takeover)
                    took = True
                if len(self.jobs) >= self.concurrency:
                    break
        return took

    async def _reclaim_unclaimed(self) -> None:
        """Dispatch entries a dead worker read but never claimed (its lease never existed)."""
        for lane in self.lanes:
            free = self.concurrency - len(self.jobs)
            if free <= 0:
                return
            reply = await guard(
                self.redis.xautoclaim(
                    lane.stream, keys.WORK_GROUP, self.id, min_idle_time=self.lease_ms, count=free
                )
            )
            await self._dispatch(
                [(lane, entry_id, fields[b"run"].decode()) for entry_id, fields in reply[1] if fields]
            )
