"""The durable store on a Redis-compatible server (Valkey, Redis 7+)."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from outlast import events as ev
from outlast.core import serde
from outlast.errors import (
    ProtocolViolation,
    RunNotFound,
    StaleAttemptError,
    StoreError,
    StoreUnavailable,
)
from outlast.store import scripts
from outlast.store.base import AppendItem, AttemptStart, NewRun, RunRecord
from outlast.store.client import multiplexer_of
from outlast.store.keys import run_keys

T = TypeVar("T")


async def _guard(pending: Awaitable[T] | T) -> T:
    """Await one store call, mapping redis-py errors into the OutlastError tree.

    (redis-py's asyncio methods are typed ``Awaitable[X] | X``; at run time they are awaitable.)
    """
    try:
        return await cast(Awaitable[T], pending)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis unreachable: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise StoreError(f"Redis error: {exc}") from exc


async def server_ms(redis: aioredis.Redis) -> int:
    """The server's clock in ms: leases and timers are compared with it, so hosts agree."""
    seconds, micros = await _guard(redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_reply(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash read as a flat field/value list (HGETALL's raw reply, or one returned by a script)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class HotPath:
    """The store's frequent commands over the client's multiplexed connection (auto-pipelining).

    Under load a worker runs hundreds of attempts at once; their claims and appends then share
    one socket write and one read instead of paying a syscall and a task switch each, and an
    idle worker's call goes out at once (see :mod:`outlast.store.mux`). A client not made by
    :func:`~outlast.store.client.redis_from_url` has no such connection: calls go through
    redis-py. Calls are independent (not a transaction).
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        mux = multiplexer_of(redis)
        self._mux = mux if mux is not None and mux.usable else None

    async def script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Call a script; one the server lost (a restart) is loaded and called again."""
        if self._mux is None:
            return await script(keys=keys, args=args)
        try:
            return await self._mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await self.redis.script_load(script.script)
            return await self._mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """HGETALL, as a dict of bytes."""
        if self._mux is None:
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[misc]
            return raw
        return hash_reply(await self._mux.execute("HGETALL", key))


class RedisStore:
    """Runs, checkpoints and event logs in Redis; every racing write is one Lua script.

    ``max_stream_len`` caps each run's stream while it runs (exact trimming; readers see a
    ``stream.gap``). How long a finished run's keys live is the writer's choice (the terminal
    event's expiry: ``Runner(retention=...)``).
    """

    def __init__(self, redis: aioredis.Redis, *, max_stream_len: int = 0) -> None:
        self.redis = redis
        self.max_stream_len = max_stream_len
        self._create = redis.register_script(scripts.CREATE_RUN)
        self._begin = redis.register_script(scripts.BEGIN_ATTEMPT)
        self._append = redis.register_script(scripts.APPEND)
        #: Frequent commands over the client's multiplexed connection (see :class:`HotPath`).
        self.hot = HotPath(redis)

    async def create_run(self, run: NewRun, queued_event: bytes) -> bool:
        keys = run_keys(run.run_id)
        args = create_run_args(run, queued_event)
        created: int = await _guard(self._create(keys=[keys.meta, keys.events], args=args))
        return bool(created)

    async def begin_attempt(self, run_id: str, expected: int | None = None) -> AttemptStart:
        keys = run_keys(run_id)
        args = ["" if expected is None else str(expected), repr(time.time())]
        reply: list[Any] = await _guard(self._begin(keys=[keys.meta], args=args))
        tag = _s(reply[0])
        if tag == "OK":
            return AttemptStart(attempt=int(reply[1]), last_seq=int(reply[2]))
        if tag == "GONE":
            raise RunNotFound(f"no run {run_id!r}")
        if tag == "TERMINAL":
            raise StoreError(f"run {run_id} already ended ({_s(reply[1])})")
        if tag == "WAITING":
            raise StoreError(f"run {run_id} is waiting; it is queued again once its wait is settled")
        raise StaleAttemptError(run_id, -1 if expected is None else expected, int(reply[1]))

    async def append(self, run_id: str, attempt: int, items: Sequence[AppendItem]) -> int:
        keys = run_keys(run_id)
        args: list[Any] = [attempt, self.max_stream_len, repr(time.time()), frame_batch(items)]
        reply: list[Any] = await _guard(self.hot.script(self._append, keys.all(), args))
        tag = _s(reply[0])
        if tag == "OK":
            return int(reply[1])
        if tag == "STALE":
            raise StaleAttemptError(run_id, attempt, int(reply[1]))
        if tag == "GONE":
            raise RunNotFound(f"no run {run_id!r} (expired or deleted)")
        raise ProtocolViolation(f"run {run_id}: append of seq {int(reply[2])} after {int(reply[1])}")

    async def load_steps(self, run_id: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await _guard(self.redis.hgetall(run_keys(run_id).steps))
        return {k.decode(): v for k, v in raw.items()}

    async def load_objects(self, run_id: str) -> dict[str, Any]:
        raw: dict[bytes, bytes] = await _guard(self.redis.hgetall(run_keys(run_id).objects))
        return {k.decode(): serde.loads(v) for k, v in raw.items()}

    async def load_waits(self, run_id: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await _guard(self.redis.hgetall(run_keys(run_id).waits))
        return {k.decode(): v for k, v in raw.items()}

    async def get_run(self, run_id: str) -> RunRecord:
        raw: dict[bytes, bytes] = await _guard(self.hot.hgetall(run_keys(run_id).meta))
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
        while True:
            if follow:
                reply = await _guard(self.redis.xread({stream: f"0-{cursor}"}, count=count, block=block_ms))
                entries = reply[0][1] if reply else []
            else:
                entries = await _guard(self.redis.xrange(stream, min=f"(0-{cursor}", count=count))
            if not entries:
                if not follow:
                    return
                try:
                    record = await self.get_run(run_id)
                except RunNotFound:
                    return
                if record.status in ev.TERMINAL_STATUSES and cursor >= record.last_seq:
                    return
                continue
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[1])
                if seq > cursor + 1:
                    yield gap_event(run_id, cursor, seq)
                event = ev.Event.model_validate_json(fields[b"e"])
                cursor = seq
                yield event
                if event.terminal:
                    return


def create_run_args(run: NewRun, queued_event: bytes, *more: Any) -> list[Any]:
    """ARGV of the CREATE_RUN script (its KEYS are the run's meta and events); ``more`` goes
    between the fixed arguments and the extra meta fields (START's own arguments)."""
    pairs = [item for pair in run.meta_fields().items() for item in pair]
    return [
        run.run_id, run.workflow, run.version, run.tenant, serde.dumps(run.input),
        repr(time.time()), queued_event, *more, *pairs,
    ]  # fmt: skip


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


def gap_event(run_id: str, cursor: int, next_seq: int) -> ev.Event:
    """The synthetic event readers get when seqs ``cursor+1 .. next_seq-1`` were trimmed."""
    return ev.Event(
        seq=next_seq - 1,
        type=ev.STREAM_GAP,
        run_id=run_id,
        attempt=0,
        ts=time.time(),
        data={"from": cursor + 1, "to": next_seq - 1},
    )
