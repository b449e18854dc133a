"""What readers of runs need besides the runtime's store: snapshots, stream pages, the run index.

The API plane reads through :class:`RunReader` (it never touches keys or clients itself); the
runtime's reads and writes are :class:`~outlast.store.redis.RedisStore`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from outlast import serde
from outlast.store import keys, scripts
from outlast.store.base import RunRecord
from outlast.store.client import RedisClient, register_script
from outlast.store.commands import HotPath, hash_reply
from outlast.store.errors import guard

#: Seconds an index entry without a run is kept by listings: a start may not have recorded it yet
#: (the index's scores are the starters' clocks: they must agree within this).
FORGET_GRACE = 60.0

#: A stream entry as stored: (seq, envelope JSON).
Entry = tuple[int, bytes]


def entries_of(raw: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
    """XRANGE/XREAD entries of a run's stream as (seq, envelope): its ids are ``0-<seq>``."""
    return [(int(entry_id.split(b"-", 1)[1]), fields[b"e"]) for entry_id, fields in raw]


def record_of(meta: dict[bytes, bytes]) -> RunRecord | None:
    """A run's meta hash as its record (None when the run has no keys: never existed or expired)."""
    if not meta:
        return None
    return RunRecord.from_hash({k.decode(): v.decode() for k, v in meta.items()})


class RunReader:
    """Read-only views of runs on one server."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._hot = HotPath(redis)
        self._snapshot = register_script(redis, scripts.SNAPSHOT)

    # -- one run ------------------------------------------------------------------------------

    async def record(self, run_id: str) -> RunRecord | None:
        """The run's record (None: no such run)."""
        return record_of(await guard(self._hot.hgetall(keys.run_keys(run_id).meta)))

    async def snapshot(self, run_id: str) -> tuple[RunRecord | None, dict[str, Any]]:
        """The run's record and objects read atomically, so the objects match ``last_seq``."""
        run = keys.run_keys(run_id)
        reply: list[list[bytes]] = await guard(self._hot.script(self._snapshot, [run.meta, run.objects], []))
        meta, objects = (hash_reply(flat) for flat in reply)
        return record_of(meta), {k.decode(): serde.loads(v) for k, v in objects.items()}

    async def position(self, run_id: str) -> tuple[str | None, int, str]:
        """(status, last_seq, tenant) without the whole record; status None: no such run."""
        # Short reads go over the multiplexed connection: a reconnect storm of stream clients
        # then needs no pooled connection (the pool is left to the blocking tails).
        fields = ["status", "last_seq", "tenant"]
        raw: list[bytes | None] = await guard(self._hot.hmget(keys.run_keys(run_id).meta, fields))
        if raw[0] is None:
            return None, 0, ""
        return raw[0].decode(), int(raw[1] or 0), (raw[2] or b"").decode()

    async def page(self, run_id: str, after: int, count: int) -> list[Entry]:
        """Up to ``count`` stored entries with seq > ``after`` (XRANGE; never blocks)."""
        return entries_of(await guard(self._hot.xrange(keys.run_keys(run_id).events, f"(0-{after}", count)))

    async def tail(self, run_id: str, after: int, count: int, block_ms: int) -> list[Entry]:
        """Entries with seq > ``after``, waiting up to ``block_ms`` for one (XREAD BLOCK).

        redis-py's errors are not mapped here: a caller tailing for long decides what a lost
        connection means to it.
        """
        reply: Any = await self.redis.xread(
            {keys.run_keys(run_id).events: f"0-{after}"}, count=count, block=block_ms
        )
        return entries_of(reply[0][1]) if reply else []

    # -- the run index ------------------------------------------------------------------------

    async def index_page(
        self, pos: tuple[int, str] | None, size: int, tenant: str | None = None
    ) -> list[tuple[str, int]]:
        """The next ``size`` (or a few more) run index entries after ``pos``, newest first, as
        (run_id, created ms); with ``tenant``, of that tenant's own index only.

        Members sharing the cursor's score are ordered by member (ZREVRANGE order), so they are
        read whole and filtered before moving to strictly older scores.
        """
        index = keys.tenant_runs_index(tenant) if tenant else keys.RUNS_INDEX
        if pos is None:
            raw: list[Any] = await guard(
                self.redis.zrevrangebyscore(index, "+inf", "-inf", start=0, num=size, withscores=True)
            )
            return [(m.decode(), int(s)) for m, s in raw]
        score, member = pos
        same: list[bytes] = await guard(self.redis.zrevrangebyscore(index, score, score))
        batch = [(m.decode(), score) for m in same if m.decode() < member]
        raw = await guard(
            self.redis.zrevrangebyscore(index, f"({score}", "-inf", start=0, num=size, withscores=True)
        )
        return batch + [(m.decode(), int(s)) for m, s in raw]

    async def fields(self, run_ids: Sequence[str], names: Sequence[str]) -> list[dict[str, str] | None]:
        """The named meta fields of each run in one round trip (None for a run whose keys are
        gone; a field the run lacks or left empty is left out). The first name must be a field
        every run has."""
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(keys.run_keys(run_id).meta, list(names))
        rows: list[list[bytes | None]] = await guard(pipe.execute())
        return [
            None if row[0] is None else {n: v.decode() for n, v in zip(names, row, strict=True) if v}
            for row in rows
        ]

    async def forget(
        self, entries: Sequence[tuple[str, int]], tenant: str | None = None, now_ms: int | None = None
    ) -> list[str]:
        """Drop index entries (run id, created ms) whose run is gone from the run index, and from
        ``tenant``'s (both outlive their keys); returns the ids dropped. Entries younger than
        :data:`FORGET_GRACE` seconds are kept: on a cluster a start writes its index entries
        before its run (:mod:`outlast.store.queue`), so a listing racing it finds no run yet."""
        cutoff = (int(time.time() * 1000) if now_ms is None else now_ms) - int(FORGET_GRACE * 1000)
        run_ids = [run_id for run_id, created_ms in entries if created_ms < cutoff]
        if not run_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(keys.RUNS_INDEX, *run_ids)
        if tenant:
            pipe.zrem(keys.tenant_runs_index(tenant), *run_ids)
        removed: list[int] = await guard(pipe.execute())
        del removed
        return run_ids

    # -- the workflow registry ----------------------------------------------------------------

    async def registrations(self, versions: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """For each version, its workflows as registered by its workers (name → registration)."""
        pipe = self.redis.pipeline(transaction=False)
        for version in versions:
            pipe.hgetall(keys.workflows_key(version))
        raw: list[dict[bytes, bytes]] = await guard(pipe.execute())
        return [{k.decode(): serde.loads(v) for k, v in each.items()} for each in raw]
