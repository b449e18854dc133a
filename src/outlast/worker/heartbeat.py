"""Lease renewal on a thread of its own.

A CPU-bound step that hogs the event loop must not let its run's lease lapse (the run would be
taken over while healthy), so renewals run on a separate thread with a synchronous Redis client.
Each renewal is the fenced RENEW script (all of a beat's renewals go in one pipeline): a worker
whose attempt was superseded learns it here and abandons the run; a cancellation request is
noticed here too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis as sync_redis
from redis import exceptions as redis_errors
from redis.commands.core import Script

from outlast.observe.logs import worker_id_var
from outlast.store import keys, scripts
from outlast.store.cluster import is_cluster_url, sync_cluster_from_url

log = logging.getLogger("outlast.worker")


@dataclass(frozen=True, slots=True)
class Held:
    run_id: str
    attempt: int
    index: str  # the lease index the run is listed in


@dataclass(frozen=True, slots=True)
class Renewal:
    held: Held
    ok: bool
    lease_until: int
    cancel: bool
    indexed: bool = False  # listed in the lease index: a takeover can find the run from now on


class LeaseRenewer(threading.Thread):
    """Renews every held lease every ``interval`` seconds until stopped.

    ``held()`` returns the leases to renew (called on this thread: keep it a cheap snapshot);
    ``on_renewed(renewals)`` gets each beat's answers on this thread and must hand work over
    to the event loop itself.
    """

    def __init__(
        self,
        url: str,
        owner: str,
        *,
        interval: float,
        lease_ms: int,
        held: Callable[[], list[Held]],
        on_renewed: Callable[[list[Renewal]], None],
    ) -> None:
        super().__init__(name=f"outlast-heartbeat-{owner}", daemon=True)
        self.client: sync_redis.Redis | sync_redis.RedisCluster
        self.cluster = is_cluster_url(url)
        if self.cluster:
            # (routes each RENEW to its run's master; the pipeline splits per node)
            self.client = sync_cluster_from_url(url, socket_timeout=max(1.0, interval))
        else:
            self.client = sync_redis.Redis.from_url(url, socket_timeout=max(1.0, interval))
        self.owner = owner
        self.interval = interval
        self.lease_ms = lease_ms
        self._held = held
        self._on_renewed = on_renewed
        self._stop_event = threading.Event()
        # (redis-py annotates Script for its single-server client; its code serves the cluster one)
        self._renew = Script(cast(sync_redis.Redis, self.client), scripts.RENEW)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        worker_id_var.set(self.owner)  # a thread starts with an empty context: name the worker in its logs
        try:
            while not self._stop_event.wait(self.interval):
                self.renew_all()
        finally:
            self.client.close()

    def _renew_each(self, held: list[Held]) -> list[Any]:
        """Cluster mode: redis-py's cluster pipeline refuses script calls, so each RENEW is sent on
        its own (to its run's master; a node that lacks the script gets it loaded). A call that
        fails is skipped, as a failed reply in a pipeline is."""
        replies: list[Any] = []
        for lease in held:
            meta = keys.run_keys(lease.run_id).meta
            try:
                replies.append(self._renew(keys=[meta], args=[lease.attempt, self.owner, self.lease_ms]))
            except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
                replies.append(exc)
        if held and all(isinstance(reply, Exception) for reply in replies):
            raise replies[0]  # (nothing got through: said once, as a pipeline's failure is)
        return replies

    def _renew_pipelined(self, held: list[Held]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for lease in held:
            meta = keys.run_keys(lease.run_id).meta
            self._renew(keys=[meta], args=[lease.attempt, self.owner, self.lease_ms], client=pipe)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def renew_all(self) -> None:
        held = self._held()
        if not held:
            return
        try:
            replies = self._renew_each(held) if self.cluster else self._renew_pipelined(held)
        except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
            # Redis briefly away: the lease has slack and the next beat tries again; say so, since
            # a renewer that can never connect (bad URL, TLS) would otherwise fail in silence.
            log.warning("lease renewal for %d runs failed: %s", len(held), exc)
            return
        renewals = []
        index_pipe = self.client.pipeline(transaction=False)
        for lease, reply in zip(held, replies, strict=True):
            if isinstance(reply, Exception):
                continue
            if reply[0] == b"ENDED":
                continue  # the run just finished here; the worker forgets it on its own
            ok = reply[0] == b"OK"
            until = int(reply[1]) if ok else 0
            renewals.append(Renewal(lease, ok, until, ok and reply[2] == b"1"))
            if ok:
                index_pipe.zadd(lease.index, {lease.run_id: until})
        indexed = False
        # The index is advisory (the meta hash holds the lease): a failed write is retried next beat.
        with contextlib.suppress(redis_errors.RedisError, redis_errors.RedisClusterException):
            index_pipe.execute()
            indexed = True
        if indexed:
            renewals = [Renewal(r.held, r.ok, r.lease_until, r.cancel, r.ok) for r in renewals]
        self._on_renewed(renewals)
