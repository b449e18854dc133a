"""What a worker writes about runs besides executing them: batched acks of work-stream entries and
removals from lease indexes, and ending runs a claim found nobody can execute."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from outlast import events as ev
from outlast.errors import OutlastError
from outlast.events import ClaimStatus, ErrorInfo, Reason, RunStatus
from outlast.store import keys
from outlast.store.client import RedisClient
from outlast.store.errors import guard
from outlast.store.leases import Claim, RunLeases
from outlast.worker.jobs import Lane

log = logging.getLogger("outlast.worker")

#: Seconds a worker gathers acks and lease-index removals before sending them in one pipeline.
BOOKKEEPING_DELAY = 0.005


class Bookkeeping:
    """Acks and index removals gathered for a few ms, then sent in one pipeline; claims that did
    not give the worker its run, acted on."""

    def __init__(
        self,
        redis: RedisClient,
        leases: RunLeases,
        *,
        worker_id: str,
        lanes: list[Lane],
        max_attempts: int,
        retry_after: float,
        on_ended: Callable[[str], None] | None = None,
    ) -> None:
        """``lanes``: every lane of the worker (an exhausted run is unlisted from all of them);
        ``retry_after``: seconds before a failed pipeline is sent again; ``on_ended``: told the
        id of a run ended here without an attempt (its attempts ran out)."""
        self.on_ended = on_ended
        self.redis = redis
        self.leases = leases
        self.worker_id = worker_id
        self.lanes = lanes
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self._acks: dict[str, list[Any]] = {}
        self._unlists: dict[str, list[Any]] = {}
        self._due = asyncio.Event()

    # -- batched writes -----------------------------------------------------------------------

    def ack(self, stream: str, entry_id: bytes) -> None:
        """XACK a work-stream entry (soon, with others)."""
        self._acks.setdefault(stream, []).append(entry_id)
        self._due.set()

    def unlist(self, index: str, run_id: str) -> None:
        """ZREM a run from a lease index (soon, with others)."""
        self._unlists.setdefault(index, []).append(run_id)
        self._due.set()

    async def loop(self) -> None:
        while True:
            await self._due.wait()
            # Acks and index removals are not urgent (an unacked entry of a claimed run is only
            # re-read after a lease timeout): gathering them for a few ms takes their round trip
            # off the path of the runs finishing right now, and batches more of them per trip.
            await asyncio.sleep(BOOKKEEPING_DELAY)
            await self.flush()

    async def flush(self) -> None:
        self._due.clear()
        acks, unlists = self._acks, self._unlists
        self._acks, self._unlists = {}, {}
        if not acks and not unlists:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, entry_ids in acks.items():
            pipe.xack(stream, keys.WORK_GROUP, *entry_ids)
        for index, run_ids in unlists.items():
            pipe.zrem(index, *run_ids)
        try:
            replies: list[Any] = await guard(pipe.execute())
            del replies
        except OutlastError as exc:  # put them back; the next turn retries
            log.warning("worker %s: bookkeeping failed, retrying: %s", self.worker_id, exc)
            for stream, entry_ids in acks.items():
                for entry_id in entry_ids:
                    self.ack(stream, entry_id)
            for index, run_ids in unlists.items():
                for run_id in run_ids:
                    self.unlist(index, run_id)
            await asyncio.sleep(self.retry_after)

    # -- claims that did not give us the run --------------------------------------------------

    async def settle_unclaimed(self, lane: Lane, run_id: str, claim: Claim) -> None:
        """Act on a claim that did not give us the run."""
        if claim.status == ClaimStatus.ALIVE:
            await guard(self.redis.zadd(lane.index, {run_id: claim.lease_until}))
        elif claim.status in (ClaimStatus.TERMINAL, ClaimStatus.GONE, ClaimStatus.WAITING):
            self.unlist(lane.index, run_id)
        elif claim.status == ClaimStatus.CANCELLED:
            await self.leases.cancel_unleased(run_id, claim.attempt)
            self.unlist(lane.index, run_id)
        elif claim.status == ClaimStatus.EXHAUSTED:
            await self._fail_exhausted(lane, run_id, claim)

    async def _fail_exhausted(self, lane: Lane, run_id: str, claim: Claim) -> None:
        lost = [w for w in claim.detail.split(",") if w]
        times = "once" if claim.losses == 1 else f"{claim.losses} times in a row"
        message = (
            f"the run lost its worker {times} without making progress (max_attempts={self.max_attempts}); "
            "a step that kills its worker each time it runs is the usual cause"
        )
        error: ErrorInfo = {
            "type": "AttemptsExhausted",
            "message": message,
            "lost_workers": lost,
            "losses": claim.losses,
            "reason": Reason.ATTEMPTS_EXHAUSTED,
        }
        data = {"error": error, "reason": Reason.ATTEMPTS_EXHAUSTED, "lost_workers": lost}
        await self.leases.finish(run_id, claim.attempt, RunStatus.FAILED, ev.RUN_FAILED, data, error)
        if self.on_ended is not None:
            self.on_ended(run_id)
        log.warning("worker %s: run %s failed: %s", self.worker_id, run_id, message)
        for each in {lane, *self.lanes}:
            self.unlist(each.index, run_id)
