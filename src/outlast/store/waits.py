"""Waiting runs on Redis: timers, suspension, settling waits, supplying input, child runs.

The attempt side (arm a timer, suspend, read settled waits) is used by
:class:`outlast.core.waiting.WaitSet`; the settling side by whoever brings the awaited thing:
the API or CLI (an input), any worker's timer scan (deadlines, child polls), a child run's end.
Every settlement is one RESOLVE script on the waiting run's slot (see ``wait_scripts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from outlast import events as ev
from outlast import serde
from outlast.errors import (
    InputRejected,
    NotWaiting,
    OutlastError,
    ProtocolViolation,
    RunNotFound,
    StaleAttemptError,
)
from outlast.masking import MASK
from outlast.store import keys, wait_scripts
from outlast.store.base import AppendItem, NewRun
from outlast.store.client import RedisClient, register_script
from outlast.store.commands import HotPath, server_ms
from outlast.store.errors import guard, text
from outlast.store.pubsub import publish
from outlast.store.queue import RunQueue

#: Seconds after which a half-done input delivery is dispatched by a timer scan.
KICK_AFTER = 10.0
#: Seconds before a timer whose settling failed is tried again.
RETRY_AFTER = 5.0

log = logging.getLogger("outlast.waits")


@dataclass(frozen=True, slots=True)
class Settled:
    """What RESOLVE answered: ``tag`` is requeue, live, none, mismatch, notdue, poll, terminal
    or gone; ``detail`` the lane, status or child run id; ``checkpoint`` when live."""

    tag: str
    detail: str = ""
    checkpoint: bytes | None = None
    deadline: int = 0


def pending_records(raw: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """A run's ``waits`` hash as wait records with their ``position``, oldest first."""
    waits = [{"position": p.decode(), **json.loads(v)} for p, v in raw.items()]
    return sorted(waits, key=lambda w: float(w.get("created", 0)))


def timer_member(run_id: str, position: str) -> str:
    return f"{run_id}|{position}"


class RedisWaits:
    """The wait service of one Redis deployment (one per worker, API process or runner)."""

    #: Attempts may suspend: a waiting run is resumed by a worker after RESOLVE re-queues it.
    can_suspend = True

    def __init__(
        self,
        redis: RedisClient,
        *,
        child_poll: float = 30.0,
        on_armed: Callable[[float], None] | None = None,
    ) -> None:
        self.redis = redis
        self.child_poll = child_poll
        #: Called with the delay of each timer armed here (a worker wakes its timer scan for it).
        self.on_armed = on_armed
        self.queue = RunQueue(redis)
        self._arm = register_script(redis, wait_scripts.ARM)
        self._suspend = register_script(redis, wait_scripts.SUSPEND)
        self._resolve = register_script(redis, wait_scripts.RESOLVE)
        self._hot = HotPath(redis)

    # -- the attempt's side -------------------------------------------------------------------

    async def arm(self, run_id: str, position: str, delay: float) -> tuple[int, int]:
        """Schedule a timer ``delay`` seconds from now (server time). Returns (now_ms, due_ms)."""
        reply: list[Any] = await guard(
            self._hot.script(
                self._arm, [keys.TIMERS], [timer_member(run_id, position), max(0, int(delay * 1000))]
            )
        )
        if self.on_armed is not None:
            self.on_armed(delay)
        return int(reply[0]), int(reply[1])

    async def server_ms(self) -> int:
        return await server_ms(self.redis)

    async def resolutions(self, run_id: str, positions: Sequence[str]) -> dict[str, bytes]:
        """Checkpoints already written for ``positions`` (waits settled since they were read)."""
        if not positions:
            return {}
        raw: list[Any] = await guard(self.redis.hmget(keys.run_keys(run_id).steps, list(positions)))
        return {p: v for p, v in zip(positions, raw, strict=True) if v is not None}

    async def fire(self, run_id: str, position: str) -> bytes | None:
        """Settle a wait whose deadline this attempt saw pass (held in memory). Its checkpoint, if
        it is settled now or was already (by a timer scan or an input)."""
        settled = await self.settle(run_id, position, "due", notify=False)  # the attempt asked
        if settled.tag == "live":
            await guard(self.redis.zrem(keys.TIMERS, timer_member(run_id, position)))
            return settled.checkpoint
        found = await self.resolutions(run_id, [position])
        return found.get(position)

    async def suspend(self, run_id: str, attempt: int, item: AppendItem, positions: Sequence[str]) -> str:
        """Park the run: 'ok', 'woken' (a wait was settled meanwhile) or 'cancel'."""
        run = keys.run_keys(run_id)
        args: list[Any] = [attempt, item.seq, item.payload, repr(time.time()), *positions]
        reply: list[Any] = await guard(self._suspend(keys=[run.meta, run.events, run.steps], args=args))
        tag = text(reply[0])
        if tag == "OK":
            return "ok"
        if tag == "WOKEN":
            return "woken"
        if tag == "CANCEL":
            return "cancel"
        if tag == "STALE":
            raise StaleAttemptError(run_id, attempt, int(reply[1]))
        if tag == "GONE":
            raise RunNotFound(f"no run {run_id!r} (expired or deleted)")
        raise ProtocolViolation(f"run {run_id}: suspending at seq {item.seq} answered {reply!r}")

    async def registered(self, run_id: str, position: str, record: dict[str, Any]) -> bytes | None:
        """A wait was just recorded. A child that already ended settles it now (its own notice
        found no wait yet); the checkpoint is returned when so."""
        if record.get("kind") != "child":
            return None
        await self.child_ended(run_id, str(record["child"]), notify=False)  # we are that attempt
        return (await self.resolutions(run_id, [position])).get(position)

    async def start_child(self, run: NewRun, queued_event: bytes, lane: str, workflow: Any) -> None:
        await self.queue.enqueue(run, queued_event, lane)

    # -- settling ------------------------------------------------------------------------------

    async def settle(
        self,
        run_id: str,
        position: str,
        mode: str,
        match: str = "",
        result: bytes = b"null",
        event_type: str = "",
        data: bytes = b"{}",
        *,
        notify: bool = True,
    ) -> Settled:
        """Run RESOLVE; a re-queued run is put on its lane's work stream before returning, and
        the worker of a live attempt is told (``notify``) so it picks the result up at once."""
        run = keys.run_keys(run_id)
        reply: list[Any] = await guard(
            self._hot.script(
                self._resolve,
                [run.meta, run.events, run.steps, run.waits],
                [position, mode, match, result, event_type, data],
            )
        )
        tag = text(reply[0]).lower()
        if tag == "requeue":
            lane = text(reply[1])
            # Straight onto a partition of its lane, not through a fair queue: it was admitted once.
            await guard(self.redis.xadd(await self.queue.partitions.stream_for(lane), {"run": run_id}))
            return Settled(tag, lane)
        if tag == "live":
            if notify:  # a hint (the attempt also polls): the settling itself has happened
                with contextlib.suppress(OutlastError):
                    await publish(self.redis, keys.SETTLED_CHANNEL, run_id)
            return Settled(tag, checkpoint=bytes(reply[1]))
        if tag == "notdue":
            return Settled(tag, deadline=int(reply[1]))
        return Settled(tag, text(reply[1]) if len(reply) > 1 else "")

    async def supply_input(self, run_id: str, key: str, value: Any) -> str:
        """Deliver ``value`` to the run's pending wait for ``key``.

        Raises NotWaiting (409) when it waits for no such key and InputRejected (422) when the
        value fails the wait's schema; the run is left as it was. Returns 'resumed' (the run
        was suspended and is queued again) or 'delivered' (a live attempt picks it up).
        """
        run = keys.run_keys(run_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(run.meta, "status")
        pipe.hgetall(run.waits)
        replies: list[Any] = await guard(pipe.execute())
        status, waits = replies
        if status is None:
            raise RunNotFound(f"no run {run_id!r}")
        inputs = [record for record in pending_records(waits) if record.get("kind") == "input"]
        record = next((r for r in inputs if r.get("key") == key), None)
        if record is None:
            raise NotWaiting(run_id, key, status.decode(), sorted({str(r.get("key")) for r in inputs}))
        position = record["position"]
        schema = record.get("schema")
        if schema:
            validator = jsonschema.Draft202012Validator(schema)
            problem = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if problem is not None:
                where = "/".join(str(part) for part in problem.absolute_path) or "(the value)"
                raise InputRejected(f"input {key!r} at {where}: {problem.message}", where, problem.message)
        try:
            encoded = serde.dumps(value)
        except ValueError as exc:  # e.g. nested deeper than the encoder allows
            message = f"input {key!r} cannot be stored as JSON: {exc}"
            raise InputRejected(message, "(the value)", str(exc)) from exc
        # If this process dies between settling and dispatching, a timer scan dispatches it. One
        # kick per delivery (two deliveries at once must not remove each other's).
        kick = timer_member(run_id, f"kick:{uuid.uuid4().hex[:12]}")
        await guard(self._arm(keys=[keys.TIMERS], args=[kick, int(KICK_AFTER * 1000)]))
        # The announcing event of a secret input shows a mask (the checkpoint keeps the value).
        shown = serde.dumps(MASK) if record.get("secret") else encoded
        settled = await self.settle(
            run_id, position, "input", key, b'{"value":' + encoded + b"}", ev.INPUT_RECEIVED,
            b'{"key":' + serde.dumps(key) + b',"value":' + shown + b"}",
        )  # fmt: skip
        # Dispatched (or nothing to dispatch): the kick and the wait's own timeout can go. (If
        # settling raised, the kick stays: the run may be queued with no dispatch yet.)
        await guard(self.redis.zrem(keys.TIMERS, kick, timer_member(run_id, position)))
        if settled.tag == "requeue":
            return "resumed"
        if settled.tag == "live":
            return "delivered"
        if settled.tag == "gone":
            raise RunNotFound(f"no run {run_id!r}")
        raise NotWaiting(run_id, key, settled.detail, [])  # settled or ended in between

    async def child_ended(self, parent: str, child: str, *, notify: bool = True) -> bool:
        """Settle ``parent``'s wait on ``child`` if the child ended. False if it has not ended."""
        fields = ["status", "result", "error"]
        raw: list[Any] = await guard(self.redis.hmget(keys.run_keys(child).meta, fields))
        status = text(raw[0]) if raw[0] is not None else "gone"
        if status not in ev.TERMINAL_STATUSES and status != "gone":
            return False
        result, error = raw[1] or b"null", raw[2] or b"null"
        outcome = b'{"run_id":%s,"status":%s,"result":%s,"error":%s}' % (
            serde.dumps(child), serde.dumps(status), result, error,
        )  # fmt: skip
        data = b'{"child_run_id":%s,"status":%s}' % (serde.dumps(child), serde.dumps(status))
        await self.settle(parent, "", "child", child, outcome, ev.CHILD_COMPLETED, data, notify=notify)
        return True

    # -- the timer scan (every worker) ---------------------------------------------------------

    async def fire_due(self, limit: int = 500) -> int:
        """Settle every due timer (a batch at a time); how many were settled. Safe to run in many
        workers at once. A timer whose settling fails is retried ``RETRY_AFTER`` seconds later."""
        settled = 0
        while True:
            now = await self.server_ms()
            raw: list[Any] = await guard(
                self.redis.zrangebyscore(keys.TIMERS, "-inf", now, start=0, num=limit)
            )
            members = [text(m) for m in raw]
            if not members:
                return settled
            outcomes = await asyncio.gather(
                *(self._fire_one(member, now) for member in members), return_exceptions=True
            )
            done = [m for m, o in zip(members, outcomes, strict=True) if o is True]
            failed = {m: now + int(RETRY_AFTER * 1000) for m, o in zip(members, outcomes, strict=True)
                      if isinstance(o, BaseException)}  # fmt: skip
            for member in failed:
                log.warning("timer %s: settling failed, retrying in %ss", member, RETRY_AFTER)
            pipe = self.redis.pipeline(transaction=False)
            if done:
                pipe.zrem(keys.TIMERS, *done)
            if failed:  # not due again at once: a broken one must not spin every scanner
                pipe.zadd(keys.TIMERS, failed, xx=True)
            replies: list[Any] = await guard(pipe.execute())
            del replies
            settled += len(done)
            if len(members) < limit or not done:
                return settled

    async def _fire_one(self, member: str, now: int) -> bool:
        """Settle one timer. True when its member may go (settled, or nothing left to do)."""
        run_id, _, position = member.rpartition("|")
        settled = await self.settle(run_id, position, "due")
        if settled.tag == "poll":
            if not await self.child_ended(run_id, settled.detail):
                await guard(self.redis.zadd(keys.TIMERS, {member: now + int(self.child_poll * 1000)}))
                return False
        elif settled.tag == "notdue":
            await guard(self.redis.zadd(keys.TIMERS, {member: settled.deadline}))
            return False
        return True
