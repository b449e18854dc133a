"""Fenced leases on runs, for the compute plane (scripts in :mod:`outlast.store.scripts`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from outlast import events as ev
from outlast import serde
from outlast.errors import RunNotFound
from outlast.events import ClaimStatus, ErrorInfo, Reason, RunStatus
from outlast.store import scripts
from outlast.store.base import RunRecord, checked_retention
from outlast.store.client import RedisClient, register_script
from outlast.store.commands import HotPath, hash_reply
from outlast.store.durability import CommitWait, commit_wait_of
from outlast.store.errors import guard, text
from outlast.store.keys import lease_index, run_keys
from outlast.store.waits import RedisWaits


@dataclass(frozen=True, slots=True)
class Claim:
    """What CLAIM answered (see :class:`~outlast.events.ClaimStatus`).

    An ``ok`` claim carries the run's record, checkpoints, objects and pending waits (and in
    ``detail`` the worker whose expired lease it took over, if any); an ``exhausted`` one the lost
    workers (``detail``) and how many attempts in a row lost theirs (``losses``); an ``unserved``
    one the workflow the claimer lacks (``detail``).
    """

    status: ClaimStatus
    attempt: int = 0
    last_seq: int = 0
    lease_until: int = 0
    detail: str = ""
    record: RunRecord | None = None
    steps: dict[str, bytes] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    waits: dict[str, bytes] = field(default_factory=dict)
    losses: int = 0


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    return {field.decode(): value for field, value in hash_reply(flat).items()}


class RunLeases:
    """Claim, renew and release runs; request cancellation; end runs nobody executes."""

    def __init__(
        self, redis: RedisClient, *, retention: float = 7 * 24 * 3600, waits: RedisWaits | None = None,
        commit_wait: CommitWait | str | None = None,
    ) -> None:  # fmt: skip
        """``waits``: the wait service that tells a finished child's parent (one is made if none).
        ``commit_wait``: whether a run ended here waits for replicas or AOF fsyncs (see
        :mod:`outlast.store.durability`; default ``OUTLAST_COMMIT_WAIT``)."""
        self.redis = redis
        self.commit_wait = commit_wait_of(commit_wait)
        self.retention = checked_retention(retention)
        self._claim = register_script(redis, scripts.CLAIM)
        self._renew = register_script(redis, scripts.RENEW)
        self._release = register_script(redis, scripts.RELEASE)
        self._cancel = register_script(redis, scripts.REQUEST_CANCEL)
        self._finish = register_script(redis, scripts.FINISH)
        self._hot = HotPath(redis)
        self.waits = waits or RedisWaits(redis)

    async def claim(
        self, run_id: str, owner: str, lease_ms: int, max_attempts: int, served: Iterable[str] = ()
    ) -> Claim:
        """Claim the run for a new attempt. ``served``: the workflows the claimer can execute (a
        run of another one is left alone: ``unserved``); empty means any."""
        names = "".join(f"{name}\n" for name in served)
        reply: list[Any] = await guard(
            self._hot.script(self._claim, run_keys(run_id).all(), [owner, lease_ms, max_attempts, names])
        )
        tag = ClaimStatus(text(reply[0]).lower())
        if tag == ClaimStatus.OK:
            meta = {k: v.decode() for k, v in _pairs(reply[4]).items()}
            objects = {k: serde.loads(v) for k, v in _pairs(reply[6]).items()}
            return Claim(tag, int(reply[1]), int(reply[2]), int(reply[3]), record=RunRecord.from_hash(meta),
                         steps=_pairs(reply[5]), objects=objects, waits=_pairs(reply[7]),
                         detail=text(reply[8]))  # fmt: skip
        if tag == ClaimStatus.ALIVE:
            return Claim(tag, lease_until=int(reply[1]))
        if tag == ClaimStatus.WAITING:
            return Claim(tag)
        if tag in (ClaimStatus.TERMINAL, ClaimStatus.GONE):
            return Claim(tag, detail=text(reply[1]) if len(reply) > 1 else "")
        if tag == ClaimStatus.EXHAUSTED:
            return Claim(tag, attempt=int(reply[1]), detail=text(reply[2]), losses=int(reply[3]))
        if tag == ClaimStatus.UNSERVED:
            return Claim(tag, detail=text(reply[1]))
        return Claim(tag, attempt=int(reply[1]))  # cancelled

    async def renew(self, run_id: str, attempt: int, owner: str, lease_ms: int) -> tuple[bool, int, bool]:
        """(still ours, lease_until, cancel requested)."""
        reply: list[Any] = await guard(
            self._renew(keys=[run_keys(run_id).meta], args=[attempt, owner, lease_ms])
        )
        if text(reply[0]) != "OK":
            return False, 0, False
        return True, int(reply[1]), text(reply[2]) == "1"

    async def release(self, run_id: str, attempt: int, owner: str, *, lost: bool = False) -> bool:
        """Drop the lease so another worker takes the run over now. ``lost``: the attempt failed
        here (counted against max_attempts, as a lease that expired), not a drain's hand-off."""
        args: list[Any] = [attempt, owner, "1" if lost else ""]
        released: int = await guard(self._release(keys=[run_keys(run_id).meta], args=args))
        return bool(released)

    async def request_cancel(self, run_id: str) -> tuple[str, int | str]:
        """('terminal', status) | ('leased', attempt) | ('unleased', attempt)."""
        reply: list[Any] = await guard(self._cancel(keys=[run_keys(run_id).meta], args=[]))
        tag = text(reply[0]).lower()
        if tag == "gone":
            raise RunNotFound(f"no run {run_id!r}")
        if tag == "terminal":
            return tag, text(reply[1])
        return tag, int(reply[1])

    async def cancel_unleased(self, run_id: str, expected_attempt: int) -> tuple[str, int]:
        """End a run nobody executes ``cancelled`` (see :meth:`finish`)."""
        data = {"reason": Reason.CANCELLED}
        return await self.finish(run_id, expected_attempt, RunStatus.CANCELLED, ev.RUN_CANCELLED, data)

    async def finish(
        self,
        run_id: str,
        expected_attempt: int,
        status: RunStatus,
        event_type: str,
        data: dict[str, Any],
        error: ErrorInfo | None = None,
    ) -> tuple[str, int]:
        """End a run nobody executes. ('ok', seq) | ('conflict', attempt) | ('terminal', 0) | ('gone', 0).

        A child run's parent, if it waits for it, is told at once (its poll timer covers a crash).
        """
        keys = run_keys(run_id)
        args: list[Any] = [
            run_id, expected_attempt, status, event_type, serde.dumps(data), repr(self.retention),
            serde.dumps(error) if error is not None else "",
        ]  # fmt: skip
        reply: list[Any]
        if self.commit_wait.enabled:
            wait = self.commit_wait.command()
            pair: tuple[Any, Any] = await guard(
                self._hot.script_then_wait(self._finish, keys.all(), args, wait)
            )
            reply, waited = pair
            if text(reply[0]).lower() == "ok":
                self.commit_wait.check(waited, f"run {run_id} ended {status}")
        else:
            reply = await guard(self._finish(keys=keys.all(), args=args))
        tag = text(reply[0]).lower()
        if tag == "ok":
            # Nobody holds the run any more: unlist it from its lane's lease index (where a
            # killed worker left it), so deploy status stops counting it in flight.
            await guard(self.redis.zrem(lease_index(text(reply[4])), run_id))
            parent = text(reply[3])
            if parent:
                await self.waits.child_ended(parent, run_id)
            return "ok", int(reply[2])
        if tag == "conflict":
            return "conflict", int(reply[1])
        return tag, 0
