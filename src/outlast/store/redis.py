"""The durable store on a Redis-compatible server (Valkey, Redis 7+)."""

from __future__ import annotations

import asyncio
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


class ScriptBatcher:
    """Sends the script calls made in one event-loop turn as one pipeline (auto-pipelining).

    Under load a worker runs hundreds of attempts at once; their appends and claims then share
    one socket write and one read instead of paying a syscall and a task switch each. A call made
    while nothing else is in flight goes straight out. Calls are independent (not a transaction).
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self._direct_in_flight = False

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        if not self._direct_in_flight and not self._flushing:
            # Nothing else going on: send it now, without the hop through the flush task.
            self._direct_in_flight = True
            try:
                return await script(keys=keys, args=args)
            finally:
                self._direct_in_flight = False
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                pipe = self.redis.pipeline(transaction=False)
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except BaseException as exc:  # connection trouble: every caller sees it
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (script, keys, args, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, redis_errors.NoScriptError):
                        # The server lost its script cache (restart): load it and call directly.
                        asyncio.get_running_loop().create_task(self._direct(script, keys, args, future))
                    elif isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._flushing = False

    @staticmethod
    async def _direct(
        script: AsyncScript, keys: list[Any], args: list[Any], future: asyncio.Future[Any]
    ) -> None:
        try:
            result = await script(keys=keys, args=args)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)


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
        self._batcher = ScriptBatcher(redis)

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
        reply: list[Any] = await _guard(self._batcher.call(self._append, keys.all(), args))
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
        raw: dict[bytes, bytes] = await _guard(self.redis.hgetall(run_keys(run_id).meta))
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


def create_run_args(run: NewRun, queued_event: bytes) -> list[Any]:
    """ARGV of the CREATE_RUN script (its KEYS are the run's meta and events)."""
    fields = run.meta_fields()
    pairs = [item for pair in fields.items() for item in pair]
    return [
        run.run_id, run.workflow, run.version, run.tenant, serde.dumps(run.input),
        repr(time.time()), queued_event, len(fields), *pairs,
    ]  # fmt: skip


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def frame_batch(items: Sequence[AppendItem]) -> bytes:
    """The APPEND script's ``batch`` argument (see store/scripts.py for the framing)."""
    parts: list[bytes] = []
    for item in items:
        parts.append(b"%d:%d:%d:" % (item.seq, len(item.payload), len(item.ops)))
        parts.append(item.payload)
        for op, a, b in item.ops:
            ab, bb = _b(a), _b(b)
            parts.append(b"%s%d:%d:" % (op.encode(), len(ab), len(bb)))
            parts.append(ab)
            parts.append(bb)
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
