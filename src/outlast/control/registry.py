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
import hashlib
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from outlast.errors import ConfigError
from outlast.store import keys, scripts
from outlast.store.client import RedisClient, register_script
from outlast.store.errors import guard, text
from outlast.store.pubsub import subscription

if TYPE_CHECKING:
    from outlast.core.workflow import Workflow

#: Seconds of silence on the deploy channel after which the subscription pings the server.
IDLE_PING = 5.0

log = logging.getLogger("outlast.control")


def registration(wf: Workflow[Any, Any], version: str) -> dict[str, Any]:
    """What a worker of ``version`` records for a workflow (the API validates starts with it)."""
    return {
        "name": wf.name, "description": wf.description, "version": version,
        "input_schema": wf.input_schema(), "output_schema": wf.output_schema(),
        "secret_args": list(wf.secret_args), "upgrade_safe": wf.upgrade_safe,
    }  # fmt: skip


def workflows_digest(workflows: Iterable[Workflow[Any, Any]]) -> str:
    """A fingerprint of a worker's workflow set: names and the contracts runs depend on (inputs,
    outputs, secret arguments, upgrade safety); descriptions may differ."""
    contract = {
        wf.name: [wf.input_schema(), wf.output_schema(), list(wf.secret_args), wf.upgrade_safe]
        for wf in workflows
    }
    return hashlib.sha256(json.dumps(contract, sort_keys=True).encode()).hexdigest()[:16]


async def register_workflows(
    redis: RedisClient,
    version: str,
    workflows: Iterable[Workflow[Any, Any]],
    *,
    worker: dict[str, Any] | None = None,
) -> None:
    """Record how a worker of ``version`` runs each workflow (input schema, secret arguments…),
    list the version, make it active if no version ever was, and announce the change so that
    processes caching registrations (:class:`RegistryCache`) drop theirs.

    ``worker``: the registering worker's entry in ``outlast:workers`` (with its ``id`` and the
    ``digest`` of its workflows), listed at once. Refused (ConfigError, nothing written) when a
    live, non-draining worker of ``version`` runs another workflow set: two codes in one version
    would take over each other's runs. Otherwise the version's registrations are replaced, so
    names no code has any more go."""
    infos = {wf.name: registration(wf, version) for wf in workflows}
    worker = worker or {}
    args: list[Any] = [
        version, worker.get("id", ""), worker.get("digest", ""), json.dumps(worker), keys.DEPLOY_CHANNEL,
    ]  # fmt: skip
    for name, info in infos.items():
        args += [name, json.dumps(info)]
    script = register_script(redis, scripts.REGISTER)
    script_keys = [keys.workflows_key(version), keys.WORKERS, keys.VERSIONS, keys.DEPLOY]
    reply: list[Any] = await guard(script(keys=script_keys, args=args))
    if text(reply[0]) == "CONFLICT":
        raise ConfigError(_conflict(version, text(reply[1]), json.loads(reply[2]), set(infos)))


def _conflict(version: str, other_id: str, other: dict[str, Any], ours: set[str]) -> str:
    theirs = set(other.get("workflows") or ())
    if theirs == ours:
        differ = f"the same workflows ({', '.join(sorted(ours)) or 'none'}) with other inputs or outputs"
    else:
        parts = []
        if theirs - ours:
            parts.append(f"missing here: {', '.join(sorted(theirs - ours))}")
        if ours - theirs:
            parts.append(f"only here: {', '.join(sorted(ours - theirs))}")
        differ = "other workflows (" + "; ".join(parts) + ")"
    return (
        f"version {version!r} is served by live worker {other_id} with other code: {differ}. Workers of "
        "one version must run the same code: start this one under another --version (then "
        "`outlast deploy promote` it), or stop that worker first"
    )


async def read_active(redis: RedisClient) -> str | None:
    value: Any = await guard(redis.hget(keys.DEPLOY, "active"))
    return value.decode() if value else None


async def read_workflow(redis: RedisClient, version: str, name: str) -> dict[str, Any] | None:
    raw: Any = await guard(redis.hget(keys.workflows_key(version), name))
    return None if raw is None else dict(json.loads(raw))


class RegistryCache:
    """``await active()`` and ``await workflow(version, name)``, from memory while subscribed."""

    def __init__(self, redis: RedisClient) -> None:
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
            try:
                async with subscription(self.redis, keys.DEPLOY_CHANNEL) as pubsub:
                    while True:
                        # A bounded wait, not listen(): a quiet channel would otherwise trip the
                        # client's socket timeout (the API sets one) and read as a lost connection.
                        # A ping after each quiet spell still finds a dead one.
                        message = await pubsub.get_message(timeout=IDLE_PING)
                        if message is None:
                            await pubsub.ping()
                        elif message.get("type") == "subscribe":
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
            await asyncio.sleep(1.0)  # reconnect backoff; reads go to Redis until then

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
