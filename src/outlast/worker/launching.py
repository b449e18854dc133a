"""The worker's launcher side: handing runs to a :class:`~outlast.worker.launcher.Launcher` and
watching the launched processes (each one claims its run and holds its lease itself)."""

from __future__ import annotations

import asyncio
import logging

from outlast import events as ev
from outlast.errors import OutlastError, RunNotFound
from outlast.events import RunStatus
from outlast.store.client import RedisClient
from outlast.store.commands import server_ms
from outlast.store.leases import RunLeases
from outlast.store.redis import RedisStore
from outlast.worker.bookkeeping import Bookkeeping
from outlast.worker.jobs import SETTLED, STARTED, Job, Lane
from outlast.worker.launcher import Launched, Launcher

log = logging.getLogger("outlast.worker")


class Launching:
    """Launches runs the worker dispatched and supervises the launched executions."""

    def __init__(
        self,
        launcher: Launcher,
        redis: RedisClient,
        store: RedisStore,
        leases: RunLeases,
        books: Bookkeeping,
        *,
        worker_id: str,
        jobs: dict[str, Job],
        slot_free: asyncio.Event,
    ) -> None:
        """``jobs``: the worker's runs (a launched one counts against its concurrency until its
        process exits); ``slot_free``: set whenever one ends."""
        self.launcher = launcher
        self.redis = redis
        self.store = store
        self.leases = leases
        self.books = books
        self.worker_id = worker_id
        self.jobs = jobs
        self.slot_free = slot_free
        self.launched = 0

    async def launch(self, lane: Lane, run_id: str, entry_id: bytes | None) -> str:
        """Hand a run to the launcher: STARTED, or SETTLED when an orphan needs no launch."""
        if entry_id is None and not await self._orphan_needs_launch(lane, run_id):
            return SETTLED
        job = Job(run_id, 0, lane, entry_id=entry_id, launched=True)
        self.jobs[run_id] = job
        self.launched += 1
        try:
            launched = await self.launcher.launch(run_id)
        except Exception as exc:
            self.jobs.pop(run_id, None)
            self.slot_free.set()
            raise OutlastError(f"launching run {run_id} failed: {exc}") from exc
        job.task = asyncio.create_task(self._supervise(job, launched), name=f"outlast-launch-{run_id}")
        return STARTED

    async def _orphan_needs_launch(self, lane: Lane, run_id: str) -> bool:
        """A run found by a takeover scan: launch it only if nobody runs it and it should run."""
        try:
            record = await self.store.get_run(run_id)
        except RunNotFound:
            self.books.unlist(lane.index, run_id)
            return False
        now_ms = await server_ms(self.redis)
        if record.status in ev.TERMINAL_STATUSES or record.status == RunStatus.WAITING:
            self.books.unlist(lane.index, run_id)  # ended, or parked until re-queued
            return False
        if record.lease_until > now_ms:
            return False
        if record.cancel_requested:  # nobody runs it and it should stop: end it here
            await self.leases.cancel_unleased(run_id, record.attempt)
            self.books.unlist(lane.index, run_id)
            return False
        return True

    async def _supervise(self, job: Job, launched: Launched) -> None:
        """Wait for the launched execution; then free its slot and ack its entry, unless it never
        claimed the run (the entry then stays pending and is dispatched again)."""
        try:
            await launched.wait()
            if job.entry_id is not None:
                record = await self.store.get_run(job.run_id)
                if record.status == RunStatus.QUEUED:  # it never claimed the run: leave the entry pending
                    log.warning(
                        "worker %s: launched run %s exited without claiming it", self.worker_id, job.run_id
                    )
                    job.entry_id = None
        except OutlastError as exc:
            log.warning("worker %s: after launching run %s: %s", self.worker_id, job.run_id, exc)
            job.entry_id = None
        finally:
            self.jobs.pop(job.run_id, None)
            if job.entry_id is not None:
                self.books.ack(job.lane.stream, job.entry_id)
            self.slot_free.set()
