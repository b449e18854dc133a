"""What a worker reads runs from: every partition of its lanes, and the fair queues behind them.

* Partitions: the worker records its ``OUTLAST_QUEUE_PARTITIONS`` for its lanes (its version and
  ``@any``) and reads every partition up to the most ever used, re-checked every beat (another
  worker may raise it). :meth:`WorkQueues.streams` is the one list of streams the worker reads.
* Fair pump: before a blocking read, with free slots, the worker pumps the partitions where fair
  runs are known to wait (a bell entry, an entry the pump wrote, a pump that left keys in the
  ring), and every beat pumps all of them once (a safety net for a bell lost with its reader).
* Caps: the worker that ends a capped key's run releases its slot at once; every beat it also
  reaps the slots of parked keys whose runs ended elsewhere (a killed worker, a cancel).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from outlast.errors import OutlastError
from outlast.store import keys
from outlast.store.base import RunRecord
from outlast.store.client import RedisClient
from outlast.store.errors import BUSYGROUP, guard, reply_code
from outlast.store.fair import FairQueues, Partitions, configured_partitions
from outlast.worker.jobs import Lane

log = logging.getLogger("outlast.worker")

#: (lane, entry id, run id) of a dispatched entry.
Entry = tuple[Lane, bytes, str]


class WorkQueues:
    """The partition streams of a worker's lanes, their fair pump and cap releases."""

    def __init__(
        self,
        redis: RedisClient,
        lanes: list[tuple[str, Lane]],
        fair: FairQueues,
        *,
        worker_id: str,
        ack: Callable[[str, bytes], None],
        every: float,
        partitions: int | None = None,
    ) -> None:
        """``lanes``: (lane version, partition 0's lane) pairs; ``ack``: the worker's batched XACK;
        ``every``: seconds between beats (partition re-check, safety-net pump, reaping)."""
        self.redis = redis
        self.fair = fair
        self.worker_id = worker_id
        self.ack = ack
        self.every = every
        self.setting = partitions if partitions is not None else configured_partitions()
        self._versions = [(version, lane.index) for version, lane in lanes]
        self._counts = {version: 1 for version, _ in lanes}
        self._partitions = Partitions(redis)
        #: Every stream read, partition 0 of each lane first (``names``: their names, the list the
        #: worker's reader holds: it grows in place).
        self.read: list[Lane] = [lane for _, lane in lanes]
        self.names: list[str] = [lane.stream for lane in self.read]
        self._lane_of = {lane.stream.encode(): lane for lane in self.read}
        self._active: set[str] = set()
        self._turn = 0
        #: Runs read here that hold a cap slot (released when they end here; else reaped).
        self._capped: set[str] = set()
        self._next_beat = 0.0
        self._releasing: set[asyncio.Task[None]] = set()

    def lanes(self) -> list[Lane]:
        return list(self.read)

    def lane_of(self, stream: bytes) -> Lane:
        return self._lane_of[stream]

    async def prepare(self) -> None:
        """Record this worker's partition setting and open every partition (groups created)."""
        for version, _ in self._versions:
            _, most = await self._partitions.record(version, self.setting)
            self._grow(version, most)
        await self.create_groups()

    async def create_groups(self) -> None:
        for lane in self.read:
            try:
                await guard(self.redis.xgroup_create(lane.stream, keys.WORK_GROUP, id="0", mkstream=True))
            except OutlastError as exc:
                if reply_code(exc) != BUSYGROUP:  # (the group exists: fine)
                    raise

    def _grow(self, version: str, most: int) -> bool:
        index = dict(self._versions)[version]
        grew = False
        for i in range(self._counts[version], most):
            lane = Lane(keys.work_partition(version, i), index)
            self.read.append(lane)
            self.names.append(lane.stream)
            self._lane_of[lane.stream.encode()] = lane
            grew = True
        self._counts[version] = max(self._counts[version], most)
        return grew

    # -- reading ------------------------------------------------------------------------------

    def inspect(self, stream: bytes, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        """Whether an entry read is a run's (the reader's hook). A bell is acked here and, like an
        entry the pump wrote, marks its stream for a pump (more of their kind likely wait)."""
        lane = self._lane_of[stream]
        if b"fair" in fields or b"bell" in fields:
            self._active.add(lane.stream)
        run_id = fields.get(b"run", b"").decode()
        if fields.get(b"fair") == b"c":
            if len(self._capped) > 100_000:  # (runs whose claim went elsewhere: reaping frees them)
                self._capped.clear()
            self._capped.add(run_id)
        if not run_id:
            self.ack(lane.stream, entry_id)
        return bool(run_id)

    async def before_read(self, free: int, loop_time: float) -> list[Entry]:
        """Pump fair runs for up to ``free`` slots where some wait, and take what was pumped (each
        pump reads for this worker: a worker blocked on the stream would otherwise take the runs
        pumped for this one's free slots); once a beat, the beat's chores first."""
        if loop_time >= self._next_beat:
            self._next_beat = loop_time + self.every
            await self._beat()
            self._active.update(lane.stream for lane in self.read)
        batch: list[Entry] = []
        streams = sorted(self._active)
        self._turn += 1  # (partitions take turns at the first pump)
        first = self._turn % len(streams) if streams else 0
        for stream in streams[first:] + streams[:first]:
            want = free - len(batch)
            if want <= 0:
                break
            try:
                _, ring, read = await self.fair.pump_read(stream, want, self.worker_id)
            except OutlastError as exc:
                log.warning("worker %s: fair pump of %s failed: %s", self.worker_id, stream, exc)
                continue
            if ring == 0:  # (the ring emptied: the next fair start rings a bell)
                self._active.discard(stream)
            name = stream.encode()
            batch += [
                (self._lane_of[name], entry_id, fields[b"run"].decode())
                for entry_id, fields in read
                if self.inspect(name, entry_id, fields)
            ]
        return batch

    async def _beat(self) -> None:
        try:
            grew = False
            for version, _ in self._versions:
                _, most = await self._partitions.get(version)
                grew = self._grow(version, most) or grew
            if grew:
                await self.create_groups()
            for lane in self.read:
                await self.fair.reap(lane.stream)
        except OutlastError as exc:
            log.warning("worker %s: queue upkeep failed: %s", self.worker_id, exc)

    # -- caps ---------------------------------------------------------------------------------

    def run_ended(self, record: RunRecord | None) -> None:
        """An attempt of a run read here ended: if the run ended and holds a cap slot, free it (in
        the background). The beat's reaping covers the rest: a release lost with this process, a
        run taken over or resumed here (not read from a capped entry), a run cancelled while queued."""
        if record is None or record.run_id not in self._capped or not record.queue:
            return
        self._capped.discard(record.run_id)
        task = asyncio.create_task(self._release(record), name="outlast-fair-release")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, record: RunRecord) -> None:
        try:
            if await self.fair.ended([record.run_id]):
                await self.fair.release(record.queue, record.fairness_key, [record.run_id])
        except OutlastError as exc:
            log.warning("worker %s: releasing run %s's slot failed: %s", self.worker_id, record.run_id, exc)
            return
        self._active.add(record.queue)  # (its key may have runs waiting for that slot)

    async def flush(self) -> None:
        """Wait for releases under way (a stopping worker)."""
        if self._releasing:
            await asyncio.gather(*list(self._releasing), return_exceptions=True)
