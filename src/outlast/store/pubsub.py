"""Pub/sub on one server or a cluster: the notice channels (``outlast:cancel``, ``outlast:settled``,
``outlast:deploy:changed``; see :mod:`outlast.store.keys`).

In a Redis / Valkey Cluster a classic ``PUBLISH`` reaches the subscribers on every node (the
nodes forward it over the cluster bus), so a subscriber needs a connection to any one node.
redis-py's asyncio cluster client has no pub/sub: :func:`subscription` opens a plain client to one
of the cluster's nodes (another one, at random, each time a subscriber comes back after losing
its connection) and closes it with the subscription.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException

from outlast.store.client import RedisClient
from outlast.store.errors import guard


async def publish(redis: RedisClient, channel: str, message: str) -> int:
    """PUBLISH (redis-py's asyncio cluster client lacks the method; the command is the same).
    How many subscribers got it (on a cluster: those connected to the node that took it).
    Errors are the store's (:func:`~outlast.store.errors.guard`)."""
    received: int = await guard(redis.execute_command("PUBLISH", channel, message), "publish")
    return received


@asynccontextmanager
async def subscription(redis: RedisClient, *channels: str) -> AsyncIterator[PubSub]:
    """A pub/sub connection subscribed to ``channels`` (the subscribe confirmations are the first
    messages read), closed on exit. Connection errors surface as redis-py's, as for a plain client."""
    node_client: aioredis.Redis | None = None
    if isinstance(redis, aioredis.Redis):
        pubsub = redis.pubsub()
    else:
        try:
            await redis.initialize()  # (learns the nodes; a no-op once done)
        except RedisClusterException as exc:  # (no node answered: not a RedisError in redis-py)
            raise redis_errors.ConnectionError(str(exc)) from exc
        node = random.choice(redis.get_nodes())
        node_client = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool(
                host=node.host, port=node.port, **_plain_options(redis.get_connection_kwargs())
            )
        )
        pubsub = node_client.pubsub()
    try:
        await pubsub.subscribe(*channels)
        yield pubsub
    finally:
        with contextlib.suppress(Exception):  # (a connection already lost: nothing to close)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        if node_client is not None:
            with contextlib.suppress(Exception):
                await node_client.connection_pool.disconnect()


def _plain_options(cluster_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The cluster's connection options, as a single server's pool takes them (no cluster parser,
    no cluster response callbacks, no pool size meant per node)."""
    dropped = {"parser_class", "response_callbacks", "max_connections", "redis_connect_func"}
    return {name: value for name, value in cluster_kwargs.items() if name not in dropped}
