"""The durable store on a Redis-compatible server (Valkey, Redis 7+)."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

from redis import exceptions as redis_errors

from outlast import events as ev
from outlast import serde
from outlast.errors import (
    ConfigError,
    ProtocolViolation,
    RunEnded,
    RunNotFound,
    RunWaiting,
    StaleAttemptError,
)
from outlast.store import scripts
from outlast.store.base import AppendItem, AttemptStart, NewRun, RunRecord
from outlast.store.client import RedisClient, register_script
from outlast.store.commands import HotPath
from outlast.store.durability import ENV_COMMIT_WAIT, CommitWait, commit_wait_of
from outlast.store.errors import guard, text
from outlast.store.keys import run_keys
from outlast.store.queue import create_run_args
from outlast.store.reads import entries_of
from outlast.store.waits import RedisWaits


class RedisStore:
    """Runs, checkpoints and event logs in Redis; every racing write is one Lua script.

    ``max_stream_len`` caps each run's stream while it runs (exact trimming; readers see a
    ``stream.gap``). How long a finished run's keys live is the writer's choice (the terminal
    event's expiry: ``Runner(retention=...)``). ``commit_wait``: whether step commits and run
    ends wait for replicas or AOF fsyncs (:mod:`outlast.store.durability`; default
    ``OUTLAST_COMMIT_WAIT``, else off).
    """

    def __init__(
        self, redis: RedisClient, *, max_stream_len: int = 0, commit_wait: CommitWait | str | None = None
    ) -> None:
        self.redis = redis
        self.max_stream_len = max_stream_len
        self.commit_wait = commit_wait_of(commit_wait)
        self._create = register_script(redis, scripts.CREATE_RUN)
        self._begin = register_script(redis, scripts.BEGIN_ATTEMPT)
        self._append = register_script(redis, scripts.APPEND)
        #: Frequent commands over the client's multiplexed connection (see :class:`HotPath`).
        self.hot = HotPath(redis)

    async def check_commit_wait(self) -> None:
        """ConfigError now, rather than at every commit, when the server cannot honour
        ``commit_wait``: WAITAOF needs Redis 7.2+ / Valkey 8, and the local fsync ``appendonly yes``."""
        wait = self.commit_wait
        if wait.mode != "aof":
            return
        try:
            await self.redis.execute_command("WAITAOF", wait.local, 0, 1)  # at most 1 ms
        except redis_errors.ResponseError as exc:
            raise ConfigError(
                f"{ENV_COMMIT_WAIT}={wait}: the server refused WAITAOF ({exc}); it needs Redis 7.2+ or "
                "Valkey 8, and appendonly yes for the local fsync"
            ) from None

    def wait_backend(self) -> RedisWaits:
        """Waits on this server: attempts may suspend; timers are settled by any worker."""
        return RedisWaits(self.redis)

    async def create_run(self, run: NewRun, queued_event: bytes) -> bool:
        keys = run_keys(run.run_id)
        args = create_run_args(run, queued_event)
        created: int = await guard(self._create(keys=[keys.meta, keys.events], args=args))
        return bool(created)

    async def begin_attempt(self, run_id: str, expected: int | None = None) -> AttemptStart:
        keys = run_keys(run_id)
        args = ["" if expected is None else str(expected), repr(time.time())]
        reply: list[Any] = await guard(self._begin(keys=[keys.meta], args=args))
        tag = text(reply[0])
        if tag == "OK":
            return AttemptStart(attempt=int(reply[1]), last_seq=int(reply[2]))
        if tag == "GONE":
            raise RunNotFound(f"no run {run_id!r}")
        if tag == "TERMINAL":
            raise RunEnded(run_id, text(reply[1]))
        if tag == "WAITING":
            raise RunWaiting(run_id)
        raise StaleAttemptError(run_id, -1 if expected is None else expected, int(reply[1]))

    async def append(self, run_id: str, attempt: int, items: Sequence[AppendItem]) -> int:
        keys = run_keys(run_id)
        args: list[Any] = [attempt, self.max_stream_len, repr(time.time()), frame_batch(items)]
        reply: list[Any]
        if self.commit_wait.applies(items):
            wait = self.commit_wait.command()
            pair: tuple[Any, Any] = await guard(
                self.hot.script_then_wait(self._append, keys.all(), args, wait)
            )
            reply, waited = pair
            if text(reply[0]) == "OK":
                self.commit_wait.check(waited, f"run {run_id} seq {items[-1].seq}")
        else:
            reply = await guard(self.hot.script(self._append, keys.all(), args))
        tag = text(reply[0])
        if tag == "OK":
            return int(reply[1])
        if tag == "STALE":
            raise StaleAttemptError(run_id, attempt, int(reply[1]))
        if tag == "GONE":
            raise RunNotFound(f"no run {run_id!r} (expired or deleted)")
        raise ProtocolViolation(f"run {run_id}: append of seq {int(reply[2])} after {int(reply[1])}")

    async def load_steps(self, run_id: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await guard(self.redis.hgetall(run_keys(run_id).steps))
        return {k.decode(): v for k, v in raw.items()}

    async def load_objects(self, run_id: str) -> dict[str, Any]:
        raw: dict[bytes, bytes] = await guard(self.redis.hgetall(run_keys(run_id).objects))
        return {k.decode(): serde.loads(v) for k, v in raw.items()}

    async def load_waits(self, run_id: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await guard(self.redis.hgetall(run_keys(run_id).waits))
        return {k.decode(): v for k, v in raw.items()}

    async def get_run(self, run_id: str) -> RunRecord:
        raw: dict[bytes, bytes] = await guard(self.hot.hgetall(run_keys(run_id).meta))
        if not raw:
            raise RunNotFound(f"no run {run_id!r}")
        return RunRecord.from_hash({k.decode(): v.decode() for k, v in raw.items()})

    async def read_events(
        self, run_id: str, after: int = 0, *, follow: bool = True, block_ms: int = 5_000, count: int = 500,
        known: RunRecord | None = None,
    ) -> AsyncIterator[ev.Event]:  # fmt: skip
        """(See RunStore.read_events.) ``known``: the run's record, just read by the caller (the
        existence check is then skipped)."""
        stream = run_keys(run_id).events
        record = known or await self.get_run(run_id)  # RunNotFound before anything is yielded
        cursor = after
        gap = partial(ev.gap_event, run_id)
        while True:
            if follow:
                reply = await guard(self.redis.xread({stream: f"0-{cursor}"}, count=count, block=block_ms))
                entries = entries_of(reply[0][1]) if reply else []
            else:
                entries = entries_of(await guard(self.redis.xrange(stream, min=f"(0-{cursor}", count=count)))
            if not entries:
                if not follow:
                    return
                try:
                    record = await self.get_run(run_id)
                except RunNotFound:
                    return
                if ev.ended(record.status, record.last_seq, cursor):
                    return
                continue
            events = (ev.Event.model_validate_json(raw) for _, raw in entries)
            batch, cursor, terminal = ev.contiguous(cursor, events, gap)
            for event in batch:
                yield event
            if terminal:
                return


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


_EVENT_HEAD = struct.Struct(">II")  # seq, envelope length
_OPS = struct.Struct(">H")  # side effects that follow the envelope
_LEN = struct.Struct(">I")


def frame_batch(items: Sequence[AppendItem]) -> bytes:
    """The APPEND script's ``batch`` argument (see store/scripts.py for the framing)."""
    parts: list[bytes] = []
    for item in items:
        parts += (_EVENT_HEAD.pack(item.seq, len(item.payload)), item.payload, _OPS.pack(len(item.ops)))
        for op, a, b in item.ops:
            ab, bb = _b(a), _b(b)
            parts += (op.encode(), _LEN.pack(len(ab)), ab, _LEN.pack(len(bb)), bb)
    return b"".join(parts)
