"""Lease renewal on a thread of its own.

A CPU-bound step that hogs the event loop must not let its run's lease lapse (the run would be
taken over while healthy), so renewals run on a separate thread with a synchronous Redis client.
Each renewal is the fenced RENEW script: a worker whose attempt was superseded learns it here
and abandons the run; a cancellation request is noticed here too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis as sync_redis
from redis import exceptions as redis_errors

from outlast.store import keys, scripts


@dataclass(frozen=True, slots=True)
class Held:
    run_id: str
    attempt: int
    index: str  # the lease index the run is listed in


class LeaseRenewer(threading.Thread):
    """Renews every held lease every ``interval`` seconds until stopped.

    ``held()`` returns the leases to renew (called on this thread: keep it a cheap snapshot);
    ``on_result(run_id, attempt, ok, lease_until, cancel)`` is called on this thread with each
    answer and must hand work over to the event loop itself.
    """

    def __init__(
        self,
        url: str,
        owner: str,
        version: str,
        *,
        interval: float,
        lease_ms: int,
        held: Callable[[], list[Held]],
        on_result: Callable[[str, int, bool, int, bool], None],
    ) -> None:
        super().__init__(name=f"outlast-heartbeat-{owner}", daemon=True)
        self.client = sync_redis.Redis.from_url(url, socket_timeout=max(1.0, interval))
        self.owner = owner
        self.version = version
        self.interval = interval
        self.lease_ms = lease_ms
        self._held = held
        self._on_result = on_result
        self._stop_event = threading.Event()
        self._renew = self.client.register_script(scripts.RENEW)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                self.renew_all()
        finally:
            self.client.close()

    def renew_all(self) -> None:
        for lease in self._held():
            try:
                reply = self._renew(
                    keys=[keys.run_keys(lease.run_id).meta], args=[lease.attempt, self.owner, self.lease_ms]
                )
            except redis_errors.RedisError:
                continue  # Redis briefly away: the lease has slack; the next beat tries again
            ok = reply[0] == b"OK"
            until = int(reply[1]) if ok else 0
            cancel = ok and reply[2] == b"1"
            if ok:
                # The index is advisory (the meta hash holds the lease): a failed write is harmless.
                with contextlib.suppress(redis_errors.RedisError):
                    self.client.zadd(lease.index, {lease.run_id: until})
            self._on_result(lease.run_id, lease.attempt, ok, until, cancel)
