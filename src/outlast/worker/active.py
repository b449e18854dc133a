"""The active deployment version, cached for as long as a pub/sub subscription vouches for it.

Every start needs the active version; reading it costs a round trip per start. A long-lived
process (the API) keeps it instead, and drops it whenever ``outlast:deploy:changed`` says the
version moved (``promote``, ``rollback``, the first worker of a deployment). The cache is only
trusted while subscribed: before the subscription is confirmed, and after it broke, every read
goes to Redis. A start racing a promotion may land on the old version, as it could when it read
the version itself just before the promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from outlast.store import keys
from outlast.store.redis import _guard

log = logging.getLogger("outlast.worker")


async def read_active(redis: aioredis.Redis) -> str | None:
    value: Any = await _guard(redis.hget(keys.DEPLOY, "active"))
    return value.decode() if value else None


class ActiveVersion:
    """``await get()``: the active version, from memory while subscribed to its changes."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._value: str | None = None
        self._valid = False
        self._generation = 0
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None
        #: Set once subscribed, and each time a change is announced (tests await them).
        self.subscribed = asyncio.Event()
        self.changed = asyncio.Event()

    async def get(self) -> str | None:
        if self._valid:
            return self._value
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="outlast-active-version")
        generation = self._generation
        value = await read_active(self.redis)
        if self._subscribed and generation == self._generation:  # no change announced meanwhile
            self._value, self._valid = value, True
        return value

    def _invalidate(self) -> None:
        self._generation += 1
        self._valid = False

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(keys.DEPLOY_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "subscribe":
                        self._subscribed = True
                        self.subscribed.set()
                    elif message.get("type") == "message":
                        self._invalidate()
                        self.changed.set()
            except redis_errors.RedisError as exc:
                log.warning("active version: subscription lost (%s); reading it per start meanwhile", exc)
            finally:
                self._subscribed = False
                self.subscribed.clear()
                self._invalidate()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(1.0)  # reconnect backoff; reads go to Redis until then

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
