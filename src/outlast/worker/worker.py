"""The compute plane: a worker executes runs of one deployment version.

* Dispatch: a blocking XREADGROUP on the version's work stream wakes the worker the moment a
  run is started (no polling). A run is *claimed* (fenced CLAIM script: new attempt + lease)
  before the stream entry is acked; entries a crashed worker read but never claimed are
  re-read by others with XAUTOCLAIM.
* Heartbeats: a thread renews each held lease every ``heartbeat`` seconds (fenced RENEW).
  A superseded attempt is abandoned; a cancel request cancels its task.
* Takeover: every beat, each worker looks in the version's lease index for leases that
  expired and claims those runs as new attempts; replay skips their completed steps.
* Draining: :meth:`stop` stops taking runs at once, lets running ones finish for up to
  ``drain_timeout`` seconds, then releases the rest so another worker takes them over now.
  Runs that only wait (input, sleep, a child) suspend at once instead.
* Timers: every beat (and when the next timer is due) each worker settles due waits —
  deadlines, durable sleeps, child polls — and re-queues the runs they wake. Leader-free: the
  settling script is idempotent, so many workers scanning at once is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from redis import exceptions as redis_errors

from outlast import events as ev
from outlast.control.registry import register_workflows, workflows_digest
from outlast.core.runner import Runner
from outlast.core.workflow import Registry, Workflow
from outlast.errors import ConfigError, OutlastError, StaleAttemptError, WorkflowNotFound
from outlast.events import AttemptStatus, ClaimStatus, RunStatus
from outlast.observe import RunObserver
from outlast.observe.logs import bind_run, worker_id_var
from outlast.store import keys
from outlast.store.base import AttemptStart
from outlast.store.client import RedisClient
from outlast.store.commands import server_ms
from outlast.store.errors import NOGROUP, guard, reply_code
from outlast.store.fair import FairQueues
from outlast.store.leases import Claim, RunLeases
from outlast.store.queue import WORK_STREAM_MAXLEN, RunQueue
from outlast.store.redis import RedisStore
from outlast.store.waits import RedisWaits
from outlast.worker.bookkeeping import Bookkeeping
from outlast.worker.heartbeat import LeaseRenewer
from outlast.worker.jobs import SETTLED, SKIPPED, STARTED, Job, Lane, redis_url_of
from outlast.worker.launcher import Launcher
from outlast.worker.launching import Launching
from outlast.worker.observing import Observing
from outlast.worker.queues import WorkQueues
from outlast.worker.reading import WorkReader
from outlast.worker.runlog import log_end, log_takeover
from outlast.worker.unserved import UnservedRuns
from outlast.worker.upkeep import Upkeep

log = logging.getLogger("outlast.worker")


class Worker:
    """Runs workflows of one version from Redis. ``await worker.run()``; ``worker.stop()`` drains.

    Built from collaborators sharing its ``jobs``: :class:`Bookkeeping` (batched acks, runs a
    claim did not give it), :class:`Upkeep` (beat, takeovers, notices, lease news),
    :class:`UnservedRuns` (runs of workflows its code lacks) and, with a launcher,
    :class:`Launching`.
    """

    def __init__(
        self,
        workflows: Registry | Iterable[Workflow[Any, Any]],
        redis: RedisClient,
        *,
        concurrency: int = 10,
        version: str | None = None,
        heartbeat: float = 1.0,
        lease_timeout: float = 4.0,
        drain_timeout: float = 30.0,
        max_attempts: int = 5,
        worker_id: str | None = None,
        retention: float = 7 * 24 * 3600,
        max_stream_len: int = 0,
        launcher: Launcher | None = None,
        hold: float = 1.0,
        observer: RunObserver | None = None,
    ) -> None:
        if concurrency < 1 or heartbeat <= 0 or lease_timeout <= heartbeat or max_attempts < 1:
            raise ConfigError(
                "worker settings: need concurrency >= 1, heartbeat > 0, lease_timeout > heartbeat "
                "and max_attempts >= 1"
            )
        self.registry = workflows if isinstance(workflows, Registry) else Registry(workflows)
        if not len(self.registry):  # (CLAIM reads no served names as "any": it would take every run)
            raise ConfigError("a worker with no workflows has nothing to run: give it at least one @workflow")
        self.redis = redis
        self.concurrency = concurrency
        self.version = version if version is not None else os.environ.get("OUTLAST_VERSION") or "dev"
        self.heartbeat = heartbeat
        self.lease_ms = int(lease_timeout * 1000)
        self.drain_timeout = drain_timeout
        self.max_attempts = max_attempts
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = RedisStore(redis, max_stream_len=max_stream_len)
        self.waits = RedisWaits(redis, on_armed=lambda delay: self.upkeep.timer_armed(delay))
        self.leases = RunLeases(
            redis, retention=retention, waits=self.waits, commit_wait=self.store.commit_wait
        )
        # hold: a wait due within this many seconds keeps its run here; a longer one suspends it.
        self.runner = Runner(self.store, retention=retention, worker_id=self.id, waits=self.waits, hold=hold)
        self.runner.spare_slot = lambda: len(self.jobs) < self.concurrency
        keys.check_version(self.version)  # (ConfigError: '@' versions are reserved, names limited)
        # Runs pinned to this version, then upgrade-safe runs any version may execute.
        self.lanes = [
            Lane(keys.work_stream(self.version), keys.lease_index(self.version)),
            Lane(keys.work_stream(keys.ANY_VERSION), keys.lease_index(keys.ANY_VERSION)),
        ]
        self.jobs: dict[str, Job] = {}
        #: What CLAIM is told this worker can execute (a run of another workflow is left alone).
        self.served = tuple(wf.name for wf in self.registry)
        self.digest = workflows_digest(self.registry)  # of the workflow set (refused if it differs)
        self.queue = RunQueue(redis)
        #: Runs of workflows this code lacks, left for workers that have them.
        self.unserved = UnservedRuns(
            self.queue, self.id, self.version, self.served, first=heartbeat, most=lease_timeout
        )
        self._executed = 0
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._hard_stop = False
        #: Claims under way (the beat's takeover scans run beside the dispatch loop): a drain waits
        #: for them, so a run one starts as the worker stops is drained like the others.
        self._claiming = 0
        self._claims_done = asyncio.Event()
        self._claims_done.set()
        #: Told when an attempt ends here (OpenTelemetry export: outlast.observe).
        self.observing = Observing(observer, worker_id=self.id)
        self.books = Bookkeeping(
            redis, self.leases, worker_id=self.id, lanes=self.lanes, max_attempts=max_attempts,
            retry_after=heartbeat, on_ended=None if observer is None else self.observing.run_ended,
        )  # fmt: skip
        #: Every partition of the lanes, and the fair queues behind them (outlast.worker.queues).
        self.queues = WorkQueues(
            redis, [(self.version, self.lanes[0]), (keys.ANY_VERSION, self.lanes[1])],
            FairQueues(redis, WORK_STREAM_MAXLEN), worker_id=self.id, ack=self.books.ack, every=heartbeat,
        )  # fmt: skip
        self.upkeep = Upkeep(
            redis, self.waits, worker_id=self.id, version=self.version, served=self.served,
            digest=self.digest, concurrency=concurrency, heartbeat=heartbeat, lease_ms=self.lease_ms,
            lanes=self.lanes, jobs=self.jobs, stopping=self._stopping, books=self.books,
            claim=self._try_claim, dispatch=self._dispatch, unserved=self.unserved.known,
            read_lanes=self.queues.lanes,
            commit_wait=self.store.commit_wait,
        )  # fmt: skip
        #: With a launcher, runs are executed by what it launches (``outlast execute``), not in here.
        self.launching = None if launcher is None else Launching(
            launcher, redis, self.store, self.leases, self.books, worker_id=self.id, jobs=self.jobs,
            slot_free=self._slot_free,
        )  # fmt: skip
        #: Set once the worker registered itself and its workflows and listens for runs.
        self.ready = asyncio.Event()

    @property
    def started_runs(self) -> int:
        """Runs started here (executed, or handed to the launcher) since the worker was made."""
        return self._executed + (self.launching.launched if self.launching is not None else 0)

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Stop taking runs and drain; ``now=True`` (a second signal) abandons runs at once."""
        self._hard_stop = self._hard_stop or now or self._stopping.is_set()
        self._stopping.set()
        self._slot_free.set()

    async def run(self, *, burst: bool = False) -> None:
        """Work until :meth:`stop` (or, with ``burst``, until nothing is queued or running)."""
        self.upkeep.bind()
        worker_id_var.set(self.id)  # on every log line of this worker (its tasks inherit it)
        await self._prepare()
        renewer = self._renewer()
        renewer.start()
        background = [
            asyncio.create_task(self.upkeep.beat(), name="outlast-beat"),
            asyncio.create_task(self.upkeep.notices(), name="outlast-notices"),
            asyncio.create_task(self.books.loop(), name="outlast-bookkeeping"),
        ]
        self.ready.set()
        try:
            await self._dispatch_loop(burst)
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.unserved.flush()
            await self.queues.flush()
            with contextlib.suppress(OutlastError):
                await self.books.flush()
            renewer.stop()
            await asyncio.to_thread(renewer.join)
            await self.observing.aclose()
            with contextlib.suppress(OutlastError):
                await guard(self.redis.hdel(keys.WORKERS, self.id))

    async def run_until_idle(self) -> None:
        await self.run(burst=True)

    def _renewer(self) -> LeaseRenewer:
        """The heartbeat thread renewing this worker's leases (on its own connection)."""
        return LeaseRenewer(
            redis_url_of(self.redis), self.id, interval=self.heartbeat, lease_ms=self.lease_ms,
            held=self.upkeep.held, on_renewed=self.upkeep.renewed,
        )  # fmt: skip

    async def _prepare(self) -> None:
        await self.store.check_commit_wait()  # (ConfigError: the server lacks WAITAOF)
        await self.queues.prepare()  # (every partition's group created)
        # Refused (ConfigError) when a live worker of this version runs other code.
        now = await server_ms(self.redis) / 1000
        await register_workflows(self.redis, self.version, self.registry, worker=self.upkeep.info(now))
        await self.upkeep.report()

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch_loop(self, burst: bool) -> None:
        block_ms = 50 if burst else int(self.heartbeat * 1000)
        # (the list of streams grows in place when another worker raises the partitions)
        reader = WorkReader(self.redis, self.id, self.queues.names, self.queue, inspect=self.queues.inspect)
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(self._stopping.wait())  # one waiter for the whole loop
        try:
            while not self._stopping.is_set():
                if self.upkeep.takeover_wanted:  # runs already under way go before new ones
                    self.upkeep.takeover_wanted = False
                    try:
                        await self.upkeep.takeover_scan()
                    except OutlastError as exc:
                        log.warning("worker %s: takeover scan failed: %s", self.id, exc)
                free = self.concurrency - len(self.jobs)
                if free <= 0:
                    self._slot_free.clear()
                    await reader.park(self._slot_free)  # (cluster: reads still out hand runs back)
                    continue
                # Fair runs pumped for this worker's free slots (and the partitions' upkeep).
                pumped = await self.queues.before_read(free, loop.time())
                if len(pumped) >= free:
                    await self._dispatch(pumped)
                    continue
                read = asyncio.ensure_future(reader.read(free - len(pumped), None if pumped else block_ms))
                await asyncio.wait([read, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError, redis_errors.RedisError):
                        await read
                    break
                try:
                    entries = read.result()
                except redis_errors.RedisError as exc:
                    log.warning("worker %s: reading the work stream failed: %s", self.id, exc)
                    if reply_code(exc) == NOGROUP:  # the server lost its data (restart without persistence)
                        with contextlib.suppress(OutlastError, redis_errors.RedisError):
                            await self.queues.create_groups()
                    await asyncio.sleep(self.heartbeat)
                    continue
                batch = pumped + [
                    (self.queues.lane_of(stream), entry_id, run_id) for stream, entry_id, run_id in entries
                ]
                await self._dispatch(batch)
                if burst and not batch and not self.jobs and not await self.upkeep.takeover_scan():
                    break
        finally:
            stopping.cancel()
            await reader.aclose()

    async def _dispatch(self, batch: list[tuple[Lane, bytes, str]]) -> None:
        """Claim a batch of dispatched runs concurrently; ack the entries of those not started.

        A started run's entry stays pending until its lease is in the lease index (first
        heartbeat) or the run ended: if this worker dies before, XAUTOCLAIM hands it on.
        """
        outcomes: list[str | BaseException]
        if len(batch) == 1:  # an idle worker woken for one run: no task in between
            lane, entry_id, run_id = batch[0]
            try:
                outcomes = [await self._try_claim(lane, run_id, entry_id)]
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._try_claim(lane, run_id, entry_id) for lane, entry_id, run_id in batch),
                return_exceptions=True,
            )
        for (lane, entry_id, run_id), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Unknown whether the claim ran: leave the entry pending, XAUTOCLAIM retries it.
                log.warning("worker %s: claiming run %s failed: %s", self.id, run_id, outcome)
            elif outcome == SETTLED:
                self.books.ack(lane.stream, entry_id)

    async def _try_claim(self, lane: Lane, run_id: str, entry_id: bytes | None = None) -> str:
        """Claim and start ``run_id`` if nobody holds a live lease on it.

        Returns STARTED, SETTLED (nothing to do here, for sure: someone holds it, it ended, or it
        was finished now) or SKIPPED (not looked at: this worker is stopping).
        """
        if run_id in self.jobs:
            return SETTLED  # a duplicate entry for a run this worker already executes
        if self._stopping.is_set():
            return SKIPPED
        self._claiming += 1
        self._claims_done.clear()
        try:
            if self.launching is not None:
                return await self.launching.launch(lane, run_id, entry_id)
            claim = await self.leases.claim(run_id, self.id, self.lease_ms, self.max_attempts, self.served)
            if claim.status == ClaimStatus.OK:
                self._start(lane, run_id, claim, entry_id)
                return STARTED
            if claim.status == ClaimStatus.UNSERVED:
                self.unserved.leave(lane, run_id, entry_id, claim.detail)
                return SKIPPED
            await self.books.settle_unclaimed(lane, run_id, claim)
            return SETTLED
        finally:
            self._claiming -= 1
            if not self._claiming:
                self._claims_done.set()

    def _start(self, lane: Lane, run_id: str, claim: Claim, entry_id: bytes | None) -> None:
        # A run found through the lease index (a takeover) is listed there already.
        job = Job(run_id, claim.attempt, lane, entry_id=entry_id, indexed=entry_id is None)
        self.jobs[run_id] = job
        log_takeover(self.id, run_id, claim)
        self._executed += 1
        job.task = asyncio.create_task(self._execute(job, claim), name=f"outlast-run-{run_id}")

    async def _execute(self, job: Job, claim: Claim) -> None:
        bind_run(job.run_id, job.attempt_no)  # this task's log lines name the run (the body's too)
        try:
            settled = await self._run_claimed(job, claim)
        except asyncio.CancelledError:
            # Drain or hard stop: _drain releases and re-queues the run; this entry is done.
            if job.entry_id is not None:
                self.books.ack(job.lane.stream, job.entry_id)
            raise
        finally:
            self.jobs.pop(job.run_id, None)
            self._slot_free.set()
            self.queues.run_ended(claim.record)  # (a capped key's slot, once the run ended)
            if job.attempt is not None:
                self.observing.attempt_ended(job.run_id, job.attempt_no)
        if not settled:
            # The store failed under this attempt (not a takeover): hand the run on now rather
            # than leave it looking alive, and keep its entry unless the hand-off is recorded.
            settled = await self.hand_off(job)
        if settled and job.entry_id is not None:
            self.books.ack(job.lane.stream, job.entry_id)
        if settled and job.indexed:
            self.books.unlist(job.lane.index, job.run_id)

    async def _run_claimed(self, job: Job, claim: Claim) -> bool:
        """Execute a claimed run. True when the run is settled (ended, or fenced off: its new
        owner has it); False when this attempt died of a store failure and must be handed on."""
        run_id, record = job.run_id, claim.record
        try:
            if record is None:
                raise OutlastError(f"claim of run {run_id} returned no record")
            try:
                wf = self.registry.get(record.workflow)
            except WorkflowNotFound:  # (CLAIM checks the name: only a registry changed since)
                self.unserved.leave(job.lane, run_id, None, record.workflow)
                await self.leases.release(run_id, claim.attempt, self.id)
                await guard(self.redis.zadd(job.lane.index, {run_id: 0}))
                job.indexed = False
                return True
            start = AttemptStart(claim.attempt, claim.last_seq)
            job.attempt = self.runner.prepare(
                wf, run_id, start, record, claim.steps, claim.objects, claim.waits
            )
            if self._stopping.is_set():
                job.attempt.suspend_soon()
            outcome = await job.attempt.run()
        except OutlastError as exc:
            log.warning("worker %s: run %s attempt %s: %s", self.id, run_id, claim.attempt, exc)
            return False
        if outcome.status != AttemptStatus.ABANDONED:
            # Ended or parked here: unlist it even if the renewer listed it after our last look.
            job.indexed = True
            log_end(self.id, run_id, claim.attempt, outcome)
            return True
        why = outcome.error["message"] if outcome.error else ""
        log.warning("worker %s: abandoned run %s attempt %s: %s", self.id, run_id, claim.attempt, why)
        if isinstance(job.attempt.writer.failure, StaleAttemptError):
            job.indexed = False  # the new owner keeps it listed
            return True
        return False

    async def hand_off(self, job: Job, *, draining: bool = False) -> bool:
        """Release a run's lease and list it as expired so any worker takes it over at once.

        Draining, the run is also queued again and the hand-off is no loss of its worker;
        otherwise the attempt failed here, which counts as one (max_attempts). False when the
        hand-off could not be recorded."""
        try:
            if await self.leases.release(job.run_id, job.attempt_no, self.id, lost=not draining):
                await guard(self.redis.zadd(job.lane.index, {job.run_id: 0}))
                if draining:
                    await self.queue.add(job.lane.stream, job.run_id)
            job.indexed = False  # listed for the next owner, not ours to remove
            return True
        except OutlastError as exc:
            log.warning("worker %s: could not hand run %s on: %s", self.id, job.run_id, exc)
            return False

    # -- draining ------------------------------------------------------------------------------

    async def _drain(self) -> None:
        await self._claims_done.wait()  # (one round trip each; what they start is drained below)
        for job in self.jobs.values():
            if job.attempt is not None:
                job.attempt.suspend_soon()  # a run that only waits parks now instead of holding on
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        if tasks and not self._hard_stop:
            log.info("worker %s: draining %d runs for up to %ss", self.id, len(tasks), self.drain_timeout)
            done_waiting = asyncio.ensure_future(asyncio.wait(tasks, timeout=self.drain_timeout))
            hard = asyncio.ensure_future(self._wait_hard_stop())
            await asyncio.wait([done_waiting, hard], return_when=asyncio.FIRST_COMPLETED)
            hard.cancel()
            done_waiting.cancel()
        leftovers = [job for job in self.jobs.values() if job.task is not None]
        tasks = [job.task for job in leftovers if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in leftovers:
            await self.hand_off(job, draining=True)  # now, instead of after the lease times out

    async def _wait_hard_stop(self) -> None:
        while not self._hard_stop:
            self._slot_free.clear()
            await self._slot_free.wait()

    # -- one run (``outlast execute``: what a launcher starts) ---------------------------------

    async def execute_one(self, run_id: str) -> str:
        """Claim ``run_id`` and execute it here, heartbeating its lease (``outlast execute``).

        Returns how it ended: completed/failed/cancelled/waiting/abandoned, or why nothing ran
        (``alive``: someone else holds it; ``terminal``; ``gone``).
        """
        self.upkeep.bind()
        worker_id_var.set(self.id)
        claim = await self.leases.claim(run_id, self.id, self.lease_ms, self.max_attempts, self.served)
        if claim.status != ClaimStatus.OK or claim.record is None:
            await self.books.settle_unclaimed(self.lanes[0], run_id, claim)
            return claim.status
        lane_version = claim.record.lane or claim.record.version
        lane = Lane(keys.work_stream(lane_version), keys.lease_index(lane_version))
        job = Job(run_id, claim.attempt, lane, indexed=True)
        log_takeover(self.id, run_id, claim)
        await guard(self.redis.zadd(lane.index, {run_id: claim.lease_until}))  # findable if we die
        renewer = self._renewer()
        self.jobs[run_id] = job
        renewer.start()
        # Cancels and settled waits reach this run at once, as in a worker's pool.
        notices = asyncio.create_task(self.upkeep.notices(), name="outlast-notices")
        try:
            # A task, so that a lost lease (seen by the renewer) can cancel it.
            job.task = asyncio.create_task(self._execute(job, claim), name=f"outlast-run-{run_id}")
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
            await self.books.flush()
        finally:
            notices.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notices
            renewer.stop()
            await asyncio.to_thread(renewer.join)
            await self.observing.aclose()
        record = await self.store.get_run(run_id)
        if record.status in ev.TERMINAL_STATUSES or record.status == RunStatus.WAITING:
            return record.status
        return AttemptStatus.ABANDONED
