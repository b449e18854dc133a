"""The worker's launcher side: handing runs to a :class:`Launcher`, and executing one run for
``outlast execute`` (what a launched process runs).

A mixin of :class:`outlast.worker.worker.Worker`, like :class:`~outlast.worker.upkeep.Upkeep`;
the attributes below are the Worker's, declared for type checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from outlast import events as ev
from outlast.errors import OutlastError, RunNotFound
from outlast.events import AttemptStatus, ClaimStatus, RunStatus
from outlast.store import keys
from outlast.store.commands import server_ms
from outlast.store.errors import guard
from outlast.store.leases import Claim, RunLeases
from outlast.store.redis import RedisStore
from outlast.worker.heartbeat import Held, LeaseRenewer, Renewal
from outlast.worker.jobs import SETTLED, SKIPPED, STARTED, Job, Lane, redis_url_of
from outlast.worker.launcher import Launcher

log = logging.getLogger("outlast.worker")


class Launching:
    id: str
    redis: aioredis.Redis
    store: RedisStore
    leases: RunLeases
    launcher: Launcher | None
    jobs: dict[str, Job]
    lanes: list[Lane]
    started_runs: int
    heartbeat: float
    lease_ms: int
    max_attempts: int
    served: tuple[str, ...]
    _acks: dict[str, list[Any]]
    _zrems: dict[str, list[Any]]
    _slot_free: asyncio.Event
    _loop: asyncio.AbstractEventLoop | None

    # The Worker's and Upkeep's:
    def _later(self, table: dict[str, list[Any]], key: str, member: Any) -> None:
        raise NotImplementedError

    async def _flush_bookkeeping(self) -> None:
        raise NotImplementedError

    def _held(self) -> list[Held]:
        raise NotImplementedError

    def _renewed(self, renewals: list[Renewal]) -> None:
        raise NotImplementedError

    async def _settle_unclaimed(self, lane: Lane, run_id: str, claim: Claim) -> None:
        raise NotImplementedError

    async def _execute(self, job: Job, claim: Claim) -> None:
        raise NotImplementedError

    async def _notice_listener(self) -> None:
        raise NotImplementedError

    async def execute_one(self, run_id: str) -> str:
        """Claim ``run_id`` and execute it here, heartbeating its lease (``outlast execute``).

        Returns how it ended: completed/failed/cancelled/waiting/abandoned, or why nothing ran
        (``alive``: someone else holds it; ``terminal``; ``gone``).
        """
        self._loop = asyncio.get_running_loop()
        claim = await self.leases.claim(run_id, self.id, self.lease_ms, self.max_attempts, self.served)
        if claim.status != ClaimStatus.OK or claim.record is None:
            await self._settle_unclaimed(self.lanes[0], run_id, claim)
            return claim.status
        lane_version = claim.record.lane or claim.record.version
        lane = Lane(keys.work_stream(lane_version), keys.lease_index(lane_version))
        job = Job(run_id, claim.attempt, lane, indexed=True)
        await guard(self.redis.zadd(lane.index, {run_id: claim.lease_until}))  # findable if we die
        renewer = LeaseRenewer(
            redis_url_of(self.redis), self.id, interval=self.heartbeat, lease_ms=self.lease_ms,
            held=self._held, on_renewed=self._renewed,
        )  # fmt: skip
        self.jobs[run_id] = job
        renewer.start()
        # Cancels and settled waits reach this run at once, as in a worker's pool.
        notices = asyncio.create_task(self._notice_listener(), name="outlast-notices")
        try:
            # A task, so that a lost lease (seen by the renewer) can cancel it.
            job.task = asyncio.create_task(self._execute(job, claim), name=f"outlast-run-{run_id}")
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
            await self._flush_bookkeeping()
        finally:
            notices.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notices
            renewer.stop()
            await asyncio.to_thread(renewer.join)
        record = await self.store.get_run(run_id)
        if record.status in ev.TERMINAL_STATUSES or record.status == RunStatus.WAITING:
            return record.status
        return AttemptStatus.ABANDONED

    async def _launch(self, lane: Lane, run_id: str, entry_id: bytes | None) -> str:
        """Hand a run to the launcher; the launched process claims it and holds its lease."""
        if self.launcher is None:
            return SKIPPED
        if entry_id is None:  # found by a takeover scan: only launch an orphan that needs it
            try:
                record = await self.store.get_run(run_id)
            except RunNotFound:
                self._later(self._zrems, lane.index, run_id)
                return SETTLED
            now_ms = await server_ms(self.redis)
            if record.status in ev.TERMINAL_STATUSES or record.status == RunStatus.WAITING:
                self._later(self._zrems, lane.index, run_id)  # ended, or parked until re-queued
                return SETTLED
            if record.lease_until > now_ms:
                return SETTLED
            if record.cancel_requested:  # nobody runs it and it should stop: end it here
                await self.leases.cancel_unleased(run_id, record.attempt)
                self._later(self._zrems, lane.index, run_id)
                return SETTLED
        job = Job(run_id, 0, lane, entry_id=entry_id, launched=True)
        self.jobs[run_id] = job
        self.started_runs += 1
        try:
            launched = await self.launcher.launch(run_id)
        except Exception as exc:
            self.jobs.pop(run_id, None)
            self._slot_free.set()
            raise OutlastError(f"launching run {run_id} failed: {exc}") from exc

        async def supervise() -> None:
            try:
                await launched.wait()
                if job.entry_id is not None:
                    record = await self.store.get_run(run_id)
                    if record.status == RunStatus.QUEUED:  # it never claimed the run: leave the entry pending
                        log.warning("worker %s: launched run %s exited without claiming it", self.id, run_id)
                        job.entry_id = None
            except OutlastError as exc:
                log.warning("worker %s: after launching run %s: %s", self.id, run_id, exc)
                job.entry_id = None
            finally:
                self.jobs.pop(run_id, None)
                if job.entry_id is not None:
                    self._later(self._acks, lane.stream, job.entry_id)
                self._slot_free.set()

        job.task = asyncio.create_task(supervise(), name=f"outlast-launch-{run_id}")
        return STARTED
