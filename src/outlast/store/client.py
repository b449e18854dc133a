"""The asyncio Redis clients Outlast creates: redis-py, with commands packed by hiredis, and a
multiplexed connection for the hot script calls; or redis-py's cluster client for a
``redis+cluster://`` URL (see :mod:`outlast.store.cluster`).

redis-py's sync connections pack commands with ``hiredis.pack_command`` when hiredis is
installed, but its asyncio connections pack them in pure Python: about 30 µs a command, the
largest single cost in a busy worker (every claim and append is a script call with a dozen
arguments). These connection classes pack the asyncio way's commands with hiredis too; replies
are parsed by hiredis either way.

The pool of a single-server client also owns a :class:`~outlast.store.mux.Multiplexer`, which the store
uses for its script calls; closing the client closes it too. A cluster client has one per master
(:class:`~outlast.store.node_mux.NodeMultiplexers`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeAlias, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.commands.core import AsyncScript

from outlast.store.cluster import cluster_from_url, is_cluster_url
from outlast.store.mux import Multiplexer, pack
from outlast.store.node_mux import NodeMultiplexers

#: What the store's code is given: a client of one server, or of a Redis / Valkey Cluster. Their
#: commands are the same; pub/sub differs (see :mod:`outlast.store.pubsub`), and the cluster
#: client sends each command (a script call too) to the master of its keys' hash slot.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        # Same rules as redis-py's packer: a command name given with spaces ("CONFIG GET") is
        # split; bool/None/containers are refused (see pack).
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [pack(args)]


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_FASTER: dict[type[Any], type[Any]] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


class OutlastPool(ConnectionPool):
    """redis-py's pool, plus the multiplexed connection of the same client (closed with it)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.multiplexer = Multiplexer(self)
        #: Commits followed by WAIT/WAITAOF (see outlast.store.durability): on a connection of
        #: their own, so a wait holds up other commits only, not claims and reads.
        self.commit_multiplexer = Multiplexer(self)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            await super().disconnect(inuse_connections)
        finally:
            await self.multiplexer.aclose()
            await self.commit_multiplexer.aclose()


class OutlastBlockingPool(OutlastPool, BlockingConnectionPool):
    """A pool of at most ``max_connections``: a command waits (up to ``timeout`` seconds) for a
    free connection instead of failing with "Too many connections".

    Hand-over is fair: redis-py's release wakes a waiter, but the releasing task (a feed looping
    on XREAD BLOCK) would take the connection back before the waiter runs, starving the others;
    yielding once after a release that woke someone lets the waiter take it first.
    """

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        if getattr(self._condition, "_waiters", True):  # someone waits (or we cannot tell)
            await asyncio.sleep(0)


def register_script(redis: RedisClient, script: str) -> AsyncScript:
    """``redis.register_script(script)`` for either client (redis-py's annotation names only the
    single-server one; its code serves the cluster client too, which routes each call to the
    master of the script's keys and loads the script on every master when one lacks it)."""
    return AsyncScript(cast(aioredis.Redis, redis), script)


def is_cluster(redis: RedisClient) -> bool:
    """True for a cluster client: multi-key writes that span slots are then split (see queue.py)."""
    return isinstance(redis, RedisCluster)


def multiplexer_of(redis: RedisClient, *, commits: bool = False) -> Multiplexer | NodeMultiplexers | None:
    """The client's multiplexed connection (``commits``: the one for waited commits); for a
    cluster client, its multiplexed connections per master (each call routed by its keys' slot;
    the same object for commits: its ``execute_then_wait`` uses a second connection per master).
    None for a client not made by :func:`redis_from_url`, or when ``OUTLAST_MULTIPLEX=0`` (its
    commands then go through redis-py alone)."""
    if os.environ.get("OUTLAST_MULTIPLEX", "1") == "0":
        return None
    if isinstance(redis, RedisCluster):
        muxes = getattr(redis, "multiplexers", None)  # (an OutlastCluster's)
        return muxes if isinstance(muxes, NodeMultiplexers) else None
    pool = redis.connection_pool
    if not isinstance(pool, OutlastPool):
        return None
    return pool.commit_multiplexer if commits else pool.multiplexer


def redis_from_url(url: str, *, wait_for_connection: float | None = None, **options: Any) -> RedisClient:
    """``redis.asyncio.Redis.from_url`` with hiredis packing for the connection type it picked,
    and a :class:`~outlast.store.mux.Multiplexer` beside its pool. ``wait_for_connection``: with
    ``max_connections``, how long a command waits for a free connection (default: it fails at once).

    A ``redis+cluster://`` / ``rediss+cluster://`` URL gives redis-py's cluster client instead
    (ConfigError for a malformed URL); it connects on its first command. Its pools cannot make a
    command wait for a free connection (past ``max_connections`` a node's pool fails), so with
    ``wait_for_connection`` the cap is left off: each node's pool grows with the blocking reads
    under way (the API's SSE tails), as it must for them all to be served."""
    if is_cluster_url(url):
        if wait_for_connection is not None:
            options.pop("max_connections", None)
        cluster = cluster_from_url(url, **options)
        kwargs = cluster.get_connection_kwargs()  # (shared with the nodes it discovers)
        kind = kwargs.get("connection_class")
        if kind in _FASTER:
            kwargs["connection_class"] = _FASTER[kind]
        return cluster
    if wait_for_connection is None:
        pool: OutlastPool = OutlastPool.from_url(url, **options)
    else:
        pool = OutlastBlockingPool.from_url(url, timeout=wait_for_connection, **options)
    pool.connection_class = _FASTER.get(pool.connection_class, pool.connection_class)
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as from_url does: aclose() closes the pool
    return client
