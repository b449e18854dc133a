"""Reading a worker's work streams: one blocking ``XREADGROUP`` over all of them on one server; in a
Redis Cluster, where each stream lives in its own hash slot (a command may not span two), one
read per stream, all outstanding at once.

A cluster read that returns leaves the others blocked for the next call, so a run started on any
stream wakes the worker at once and no entry a read already took is dropped. Each read asks for
as many entries as the worker had free slots when it was sent; entries beyond the slots free now
are handed back to their stream for another worker (``REQUEUE``: re-added and acked at once), and
so is what outstanding reads took when the worker fills up (:meth:`WorkReader.park`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors

from outlast.errors import OutlastError
from outlast.store import keys
from outlast.store.client import RedisClient, is_cluster
from outlast.store.queue import RunQueue

log = logging.getLogger("outlast.worker")

#: One entry read: (stream, entry id, run id).
Entry = tuple[bytes, bytes, str]
#: Looks at an entry's fields first: whether it is a run's (if not, it is not dispatched: the hook
#: acks it). The fair queues' hook (outlast.worker.queues) sees bells and pumped entries here.
Inspect = Callable[[bytes, bytes, dict[bytes, bytes]], bool]


def _entries(reply: Any, inspect: Inspect | None = None) -> list[Entry]:
    return [
        (name, entry_id, fields[b"run"].decode())
        for stream, entries in reply or []
        for name in [stream if isinstance(stream, bytes) else str(stream).encode()]
        for entry_id, fields in entries
        if fields and (inspect is None or inspect(name, entry_id, fields))  # (deleted since delivered)
    ]


class WorkReader:
    """``await reader.read(count, block_ms)``: up to ``count`` entries of ``streams`` for
    ``consumer`` (redis-py's errors are raised as they are). ``aclose()`` drops cluster reads
    still outstanding. ``streams`` is read at each call (the caller may add to it); ``inspect``
    sees each entry's fields first."""

    def __init__(
        self,
        redis: RedisClient,
        consumer: str,
        streams: list[str],
        queue: RunQueue,
        inspect: Inspect | None = None,
    ) -> None:
        self.inspect = inspect
        self.redis = redis
        self.consumer = consumer
        self.streams = streams
        self.queue = queue
        self.per_stream = is_cluster(redis)
        self._pending: dict[str, asyncio.Task[Any]] = {}

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """``block_ms`` None: do not wait for entries (in a cluster, the reads already outstanding
        are not waited for either: what they take comes with a later call)."""
        if not self.per_stream:
            reply = await self.redis.xreadgroup(
                keys.WORK_GROUP, self.consumer, dict.fromkeys(self.streams, ">"), count=count, block=block_ms
            )
            return _entries(reply, self.inspect)
        sent = []
        for stream in self.streams:
            if stream not in self._pending:
                self._pending[stream] = asyncio.ensure_future(
                    self.redis.xreadgroup(
                        keys.WORK_GROUP, self.consumer, {stream: ">"}, count=count, block=block_ms
                    )
                )
                sent.append(self._pending[stream])
        if block_ms is not None:
            await asyncio.wait(self._pending.values(), return_when=asyncio.FIRST_COMPLETED)
        elif sent:
            await asyncio.wait(sent)
        entries: list[Entry] = []
        failure: BaseException | None = None
        for stream, task in list(self._pending.items()):
            if not task.done():
                continue
            del self._pending[stream]
            try:
                entries += _entries(task.result(), self.inspect)
            except redis_errors.RedisError as exc:
                failure = failure or exc
            except redis_errors.RedisClusterException as exc:  # no node answered (not a RedisError)
                failure = failure or redis_errors.ConnectionError(str(exc))
        if len(entries) > count:
            await self._hand_back(entries[count:])
            entries = entries[:count]
        if failure is not None and not entries:
            raise failure
        return entries

    async def _hand_back(self, extra: list[Entry]) -> None:
        """Entries beyond the free slots go back to their stream for another worker (still pending
        for this consumer if that fails: XAUTOCLAIM re-reads them after the lease timeout)."""
        for stream, entry_id, run_id in extra:
            try:
                await self.queue.requeue(stream.decode(), entry_id, self.consumer, run_id)
            except OutlastError as exc:
                log.warning("worker %s: could not hand run %s back: %s", self.consumer, run_id, exc)

    async def park(self, slot_free: asyncio.Event) -> None:
        """The worker is full: wait for ``slot_free``, handing back at once whatever outstanding
        reads take meanwhile, rather than hold runs no slot here will take soon."""
        waiter = asyncio.ensure_future(slot_free.wait())
        try:
            while not slot_free.is_set():
                await asyncio.wait([waiter, *self._pending.values()], return_when=asyncio.FIRST_COMPLETED)
                taken: list[Entry] = []
                for stream, task in list(self._pending.items()):
                    if task.done():
                        del self._pending[stream]
                        with contextlib.suppress(redis_errors.RedisError, redis_errors.RedisClusterException):
                            taken += _entries(task.result(), self.inspect)
                await self._hand_back(taken)
        finally:
            waiter.cancel()

    async def aclose(self) -> None:
        pending, self._pending = list(self._pending.values()), {}
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(
                asyncio.CancelledError, redis_errors.RedisError, redis_errors.RedisClusterException
            ):
                await task
