"""Queue partitions and fair queues (scripts in :mod:`outlast.store.fair_scripts`).

*Partitions*: a version's queue is N work streams (``keys.work_partition``), N recorded per
version by its workers (``outlast:partitions``: the N new starts use, and the most ever used,
which workers read). A start with a fairness key goes to the key's partition (a stable hash), so
all of a key's runs, its cap and its turn live in one slot; other starts go round-robin.

*Fair queues*: a run started with a fairness key waits in its key's list in its partition; the
partition's ring lists keys with waiting runs. Workers with free slots *pump*: one script moves
up to that many runs round-robin across the ring onto the stream as ordinary entries, so from
there on a run is dispatched, claimed and recovered exactly as any other (PEL, XAUTOCLAIM).
"""

from __future__ import annotations

import itertools
import os
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any

from outlast.errors import ConfigError, StoreError
from outlast.events import TERMINAL_STATUSES
from outlast.store import fair_scripts, keys
from outlast.store.client import RedisClient, register_script
from outlast.store.errors import guard

#: Environment setting: how many work-stream partitions a worker's version uses (default 1).
PARTITIONS_ENV = "OUTLAST_QUEUE_PARTITIONS"
MAX_PARTITIONS = 256
#: A fairness key is part of Redis key names: bounded like an idempotency key.
MAX_FAIRNESS_KEY = 256
#: Seconds a starter trusts its copy of a version's partition count (it only matters when N changes).
PARTITIONS_TTL = 5.0
#: The bell key's expiry (ms): a bell lost with a trimmed stream stops blocking new bells after this.
BELL_MS = 10_000


@dataclass(frozen=True, slots=True)
class Fairness:
    """How a run is queued fairly: behind ``key``; ``max_concurrency`` and ``weight`` (runs per
    turn), when given, set the key's limits in its partition (0 clears one)."""

    key: str
    max_concurrency: int | None = None
    weight: int | None = None

    def __post_init__(self) -> None:
        check_fairness_key(self.key)
        for name, value in (("max_concurrency", self.max_concurrency), ("weight", self.weight)):
            if value is not None and not 0 <= value <= 1_000_000:
                raise ConfigError(f"{name} must be between 0 (clear) and 1,000,000, got {value!r}")


def check_fairness_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_FAIRNESS_KEY:
        raise ConfigError(f"fairness key must be 1-{MAX_FAIRNESS_KEY} characters, got {len(key)}")
    return key


def configured_partitions(environ: dict[str, str] | None = None) -> int:
    """``OUTLAST_QUEUE_PARTITIONS`` (default 1), validated."""
    raw = (environ if environ is not None else os.environ).get(PARTITIONS_ENV, "").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PARTITIONS:
        raise ConfigError(f"{PARTITIONS_ENV}={raw!r}: use a whole number from 1 to {MAX_PARTITIONS}")
    return n


def partition_of(key: str, n: int) -> int:
    """A fairness key's partition: stable across processes and restarts (CRC-32, not hash())."""
    return zlib.crc32(key.encode()) % n if n > 1 else 0


def _limit(value: int | None) -> str:
    return "" if value is None else str(value)


class Partitions:
    """A version's partition count: read (and cached briefly) by starters, recorded by workers."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._set = register_script(redis, fair_scripts.SET_PARTITIONS)
        self._cache: dict[str, tuple[float, int, int]] = {}
        self._next = itertools.count(random.randrange(MAX_PARTITIONS))  # (starters spread apart)

    async def get(self, version: str) -> tuple[int, int]:
        """(partitions new starts use, most ever used) for ``version``; (1, 1) if none recorded."""
        cached = self._cache.get(version)
        if cached is not None and time.monotonic() - cached[0] < PARTITIONS_TTL:
            return cached[1], cached[2]
        raw: Any = await guard(self.redis.hget(keys.PARTITIONS, version))
        n, most = (1, 1)
        if raw:
            first, _, second = raw.decode().partition(" ")
            n, most = int(first), int(second or first)
        self._cache[version] = (time.monotonic(), n, most)
        return n, most

    async def record(self, version: str, n: int) -> tuple[int, int]:
        """A worker's setting for ``version``: (n, most ever used)."""
        reply: list[Any] = await guard(self._set(keys=[keys.PARTITIONS], args=[version, n]))
        self._cache[version] = (time.monotonic(), int(reply[0]), int(reply[1]))
        return int(reply[0]), int(reply[1])

    async def stream_for(self, lane: str, fairness_key: str = "") -> str:
        """The partition stream a new run of ``lane`` goes to."""
        n, _ = await self.get(lane)
        index = partition_of(fairness_key, n) if fairness_key else next(self._next) % n
        return keys.work_partition(lane, index)


class FairQueues:
    """The fair scripts of one process: push (cluster mode's enqueue step), pump, release, reap."""

    def __init__(self, redis: RedisClient, maxlen: int) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self._push = register_script(redis, fair_scripts.PUSH)
        self._pump = register_script(redis, fair_scripts.PUMP)
        self._release = register_script(redis, fair_scripts.RELEASE)
        self._limits = register_script(redis, fair_scripts.SET_LIMITS)

    @staticmethod
    def push_keys(stream: str, key: str) -> list[str]:
        """KEYS of PUSH (START_FAIR's from its third): the stream, its fair keys, the key's list."""
        return [stream, *keys.fair_keys(stream), keys.fair_waiting(stream, key)]

    @staticmethod
    def push_args(fairness: Fairness) -> list[Any]:
        return [fairness.key, _limit(fairness.max_concurrency), _limit(fairness.weight)]

    async def push(self, stream: str, run_id: str, fairness: Fairness) -> None:
        """Queue a recorded run behind its key (the enqueue step when START cannot span slots)."""
        args: list[Any] = [run_id, *self.push_args(fairness), self.maxlen, BELL_MS]
        await guard(self._push(keys=self.push_keys(stream, fairness.key), args=args))

    async def pump(self, stream: str, want: int) -> tuple[int, int]:
        """Move up to ``want`` waiting runs onto ``stream``: (moved, keys left in the ring)."""
        moved, ring, _ = await self.pump_read(stream, want, "")
        return moved, ring

    async def pump_read(self, stream: str, want: int, consumer: str) -> tuple[int, int, list[Any]]:
        """Pump for ``want`` free slots, then read up to ``want`` entries of ``stream`` for
        ``consumer`` (a worker): (moved, keys left in the ring, [(entry id, {field: value})])."""
        prefixes = [keys.fair_waiting(stream, ""), keys.fair_running(stream, "")]
        args: list[Any] = [want, keys.WORK_GROUP, self.maxlen, int(time.time() * 1000), *prefixes, consumer]
        reply: list[Any] = await guard(self._pump(keys=[stream, *keys.fair_keys(stream)], args=args))
        entries = [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in reply[2]]
        return int(reply[0]), int(reply[1]), entries

    async def release(self, stream: str, key: str, run_ids: list[str]) -> int:
        """Free the cap slots of ended runs of ``key``: how many were held."""
        if not run_ids:
            return 0
        script_keys = [stream, *keys.fair_keys(stream), keys.fair_running(stream, key)]
        args: list[Any] = [key, self.maxlen, BELL_MS, *run_ids]
        released: int = await guard(self._release(keys=script_keys, args=args))
        return released

    async def set_limits(self, stream: str, key: str, cap: int | None, weight: int | None) -> None:
        """Set (or with 0 clear) a key's cap and weight in one partition; None leaves one alone."""
        limits = keys.fair_keys(stream)[2]
        await guard(self._limits(keys=[limits], args=[key, _limit(cap), _limit(weight)]))

    async def queued(self, stream: str) -> int:
        """Runs on ``stream`` not yet taken (undelivered or pending) and waiting in its fair queue:
        O(keys with waiting runs), for status reports."""
        try:
            groups: list[dict[str, Any]] = await guard(self.redis.xinfo_groups(stream))
        except StoreError:
            groups = []  # no stream yet
        count = sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)
        ring, parked, *_ = keys.fair_keys(stream)
        waiting = {*await guard(self.redis.lrange(ring, 0, -1)), *await guard(self.redis.smembers(parked))}
        pipe = self.redis.pipeline(transaction=False)
        for key in waiting:
            pipe.llen(keys.fair_waiting(stream, key.decode()))
        if not waiting:
            return count
        lengths: list[int] = await guard(pipe.execute())
        return count + sum(lengths)

    async def ended(self, run_ids: list[str]) -> list[str]:
        """Those of ``run_ids`` that ended (or are gone): their cap slots may go."""
        if not run_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(keys.run_keys(run_id).meta, "status")
        statuses: list[bytes | None] = await guard(pipe.execute())
        pairs = zip(run_ids, statuses, strict=True)
        return [run_id for run_id, st in pairs if st is None or st.decode() in TERMINAL_STATUSES]

    async def reap(self, stream: str) -> int:
        """Release the slots of ended runs of every parked key of ``stream`` (a worker killed after
        its run ended, a run cancelled or expired with nobody to release it): O(parked keys ×
        their caps), once a beat; a key at its cap is parked, so a leaked slot always shows here."""
        parked: set[bytes] = await guard(self.redis.smembers(keys.fair_keys(stream)[1]))
        released = 0
        for raw in parked:
            key = raw.decode()
            held: list[bytes] = await guard(self.redis.zrange(keys.fair_running(stream, key), 0, -1))
            gone = await self.ended([r.decode() for r in held])
            released += await self.release(stream, key, gone)
        return released
