"""The active deployment version and the workflow registry: workers register their workflows,
clients read them, cached while a pub/sub subscription vouches for them.

Every start needs the active version and the workflow's registration (its input schema, secret
arguments); reading them costs round trips per start. A long-lived process (the API) keeps them
instead, and drops everything whenever ``outlast:deploy:changed`` says something moved
(``promote``, ``rollback``, a worker registering its workflows). The cache is only trusted while
subscribed: before the subscription is confirmed, and after it broke, every read goes to Redis.
A start racing a promotion may land on the old version, as it could when it read the version
itself just before the promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from outlast.store import keys
from outlast.store.errors import guard

if TYPE_CHECKING:
    from outlast.core.workflow import Workflow

log = logging.getLogger("outlast.control")


async def register_workflows(
    redis: aioredis.Redis, version: str, workflows: Iterable[Workflow[Any, Any]]
) -> None:
    """Record how a worker of ``version`` runs each workflow (input schema, secret arguments…),
    list the version, make it active if no version ever was, and announce the change so that
    processes caching registrations (:class:`RegistryCache`) drop theirs."""
    pipe = redis.pipeline(transaction=False)
    for wf in workflows:
        info = {
            "name": wf.name, "description": wf.description, "version": version,
            "input_schema": wf.input_schema(), "output_schema": wf.output_schema(),
            "secret_args": list(wf.secret_args), "upgrade_safe": wf.upgrade_safe,
        }  # fmt: skip
        pipe.hset(keys.workflows_key(version), wf.name, json.dumps(info))
    pipe.zadd(keys.VERSIONS, {version: int(time.time() * 1000)})
    pipe.hsetnx(keys.DEPLOY, "active", version)  # the first version ever seen becomes active
    pipe.publish(keys.DEPLOY_CHANNEL, version)
    replies: list[Any] = await guard(pipe.execute())
    del replies


async def read_active(redis: aioredis.Redis) -> str | None:
    value: Any = await guard(redis.hget(keys.DEPLOY, "active"))
    return value.decode() if value else None


async def read_workflow(redis: aioredis.Redis, version: str, name: str) -> dict[str, Any] | None:
    raw: Any = await guard(redis.hget(keys.workflows_key(version), name))
    return None if raw is None else dict(json.loads(raw))


class RegistryCache:
    """``await active()`` and ``await workflow(version, name)``, from memory while subscribed."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._active: tuple[str | None] | None = None
        self._workflows: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._generation = 0
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None
        #: Set once subscribed, and each time a change is announced (tests await them).
        self.subscribed = asyncio.Event()
        self.changed = asyncio.Event()

    async def active(self) -> str | None:
        if self._active is not None:
            return self._active[0]
        generation = self._listening()
        value = await read_active(self.redis)
        if self._trusted(generation):
            self._active = (value,)
        return value

    async def workflow(self, version: str, name: str) -> dict[str, Any] | None:
        """The workflow's registration in ``version`` (None when no worker registered it)."""
        key = (version, name)
        if key in self._workflows:
            return self._workflows[key]
        generation = self._listening()
        info = await read_workflow(self.redis, version, name)
        if self._trusted(generation):
            self._workflows[key] = info
        return info

    def _listening(self) -> int:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="outlast-registry-cache")
        return self._generation

    def _trusted(self, generation: int) -> bool:
        # Subscribed, and no change was announced while the value was being read.
        return self._subscribed and generation == self._generation

    def _invalidate(self) -> None:
        self._generation += 1
        self._active = None
        self._workflows.clear()

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
                log.warning("registry cache: subscription lost (%s); reading per start meanwhile", exc)
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
