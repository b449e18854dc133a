"""The start sweeper (cluster mode): finishes starts whose process died between their steps.

On a cluster a start is four steps (:mod:`outlast.store.queue`): (0) the run index entry, (1) the
run's record, (2) its work-stream entry, (3) the rest, ending with the ``dispatched`` marker. A
start without an idempotency key that died halfway has nobody to retry it, so every worker's beat
tries a short lock (``SET NX PX``, one heartbeat: leader-free, one sweeper at a time, single-key
commands only) and the holder walks the run index by score (created ms) from a persisted cursor
(``outlast:sweep:starts``) up to now − ``grace``, in pipelined batches of HMGETs:

* an entry without a run (died after step 0) is removed from the index;
* a run without the marker that was never claimed (``queued``, attempt 0) is dispatched again, as
  a retried start does (a duplicate entry is harmless: the second claim settles; a fair run goes
  back to its fair queue), and its step (3) is written;
* a run without the marker that was claimed already gets its step (3) only (its version, parent's
  children, index entries).

Each run is examined once, ``grace`` after its start, so the cost is O(starts), never a scan of all
runs: a half-started run runs within ``grace`` + one heartbeat. Starters' clocks must be within
``grace`` of the sweeper's (the index's scores are theirs).

Only on a cluster: on one server ``START`` is one script, a run exists whole or not at all, and
``START`` (unchanged, the single-server hot path) writes no marker, so a sweep there would only
cost reads (and re-dispatch every queued run it meets).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from outlast.errors import ConfigError
from outlast.events import RunStatus
from outlast.store import keys
from outlast.store.client import RedisClient
from outlast.store.errors import guard
from outlast.store.fair import Fairness
from outlast.store.queue import DISPATCHED, RunQueue

log = logging.getLogger("outlast.worker")

#: Seconds a start is given to finish before the sweeper completes it (``OUTLAST_SWEEP_GRACE``).
GRACE_ENV = "OUTLAST_SWEEP_GRACE"
DEFAULT_GRACE = 15.0
#: Runs read per pipelined round trip, and at most this many batches per sweep (the rest: next beat).
BATCH = 500
MOST_BATCHES = 20
#: Without a cursor (the first sweep of a deployment, or the key was lost), runs started this long
#: before the grace are checked, not the whole index (runs from before a cluster start had steps).
FIRST_LOOKBACK_MS = 3_600_000

_FIELDS = ("status", "attempt", DISPATCHED, "version", "lane", "tenant", "parent", "queue", "fairness_key")


def grace_from_env() -> float:
    """``OUTLAST_SWEEP_GRACE`` in seconds (default 15), validated."""
    raw = os.environ.get(GRACE_ENV, "")
    if not raw:
        return DEFAULT_GRACE
    try:
        grace = float(raw)
    except ValueError:
        grace = -1.0
    if not 0 < grace <= 3600:
        raise ConfigError(f"{GRACE_ENV} must be a number of seconds in (0, 3600], not {raw!r}")
    return grace


@dataclass
class SweepCounts:
    """What sweeps did since the sweeper was made (tests and logs read them)."""

    sweeps: int = 0
    examined: int = 0  # runs read (one HMGET each)
    redispatched: int = 0
    finished: int = 0  # claimed runs whose step (3) was written
    forgotten: int = 0  # index entries without a run, removed


class StartSweep:
    """One worker's share of the start sweep: :meth:`beat` every heartbeat."""

    def __init__(
        self, redis: RedisClient, queue: RunQueue, *, worker_id: str, every: float, grace: float | None = None
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.worker_id = worker_id
        self.every_ms = max(1, int(every * 1000))
        self.grace_ms = int((grace_from_env() if grace is None else grace) * 1000)
        self.counts = SweepCounts()

    async def beat(self) -> bool:
        """Sweep if no other worker did within a heartbeat (True: this one swept)."""
        if not await guard(self.redis.set(keys.SWEEP_LOCK, self.worker_id, nx=True, px=self.every_ms)):
            return False
        await self.sweep()
        return True

    async def sweep(self, now_ms: int | None = None) -> int:
        """Check the runs started since the cursor, up to ``now_ms`` − grace (default: this
        process's clock, as the index's scores are the starters'). Returns the runs examined."""
        upto = (int(time.time() * 1000) if now_ms is None else now_ms) - self.grace_ms
        raw = await guard(self.redis.get(keys.SWEEP_STARTS))
        cursor = int(raw) if raw else upto - FIRST_LOOKBACK_MS  # (first sweep: not the whole index)
        examined = 0
        for _ in range(MOST_BATCHES):
            if cursor >= upto:
                break
            page: list[Any] = await guard(
                self.redis.zrangebyscore(
                    keys.RUNS_INDEX, f"({cursor}", upto, start=0, num=BATCH, withscores=True
                )
            )
            if not page:
                cursor = upto
                break
            batch = [(m.decode(), int(s)) for m, s in page]
            last = batch[-1][1]
            if len(batch) == BATCH:  # runs sharing the last score may go on past the page: take them all
                seen = {run_id for run_id, _ in batch}
                same: list[bytes] = await guard(self.redis.zrangebyscore(keys.RUNS_INDEX, last, last))
                batch += [(m.decode(), last) for m in same if m.decode() not in seen]
            await self._check(batch)
            examined += len(batch)
            cursor = last
            await guard(self.redis.set(keys.SWEEP_STARTS, cursor))  # (per batch: a crash loses one)
        else:
            log.info("worker %s: start sweep read %d runs; more next beat", self.worker_id, examined)
        if cursor >= upto:
            await guard(self.redis.set(keys.SWEEP_STARTS, cursor))
        self.counts.sweeps += 1
        self.counts.examined += examined
        return examined

    async def _check(self, batch: list[tuple[str, int]]) -> None:
        """One pipelined round trip of HMGETs (one per node), then what each half-started run needs."""
        pipe = self.redis.pipeline(transaction=False)
        for run_id, _ in batch:
            pipe.hmget(keys.run_keys(run_id).meta, list(_FIELDS))
        rows: list[list[bytes | None]] = await guard(pipe.execute())
        gone: list[str] = []
        for (run_id, created_ms), row in zip(batch, rows, strict=True):
            status, attempt, dispatched, version, lane, tenant, parent, queue, fairness_key = (
                (v or b"").decode() for v in row
            )
            if not status:  # its start died after step (0), or the run expired since
                gone.append(run_id)
                continue
            if dispatched:
                continue
            if status == RunStatus.QUEUED and attempt == "0":
                fair = Fairness(fairness_key) if fairness_key else None  # (its fair queue again)
                await self.queue.dispatch(
                    run_id, lane or version, version=version, created_ms=created_ms, tenant=tenant,
                    parent=parent, stream=queue or None, fairness=fair, reindex=False, swept=True,
                )  # fmt: skip
                self.counts.redispatched += 1
                log.info("worker %s: dispatched run %s, whose start died halfway", self.worker_id, run_id)
            else:
                await self.queue.finish(
                    run_id, version=version, created_ms=created_ms, tenant=tenant, parent=parent,
                    reindex=False, swept=True,
                )  # fmt: skip
                self.counts.finished += 1
        if gone:
            await guard(self.redis.zrem(keys.RUNS_INDEX, *gone))
            self.counts.forgotten += len(gone)
