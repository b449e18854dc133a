"""The hot path on a cluster: one multiplexed connection per master, each call routed by its slot.

redis-py's cluster client sends each command over a connection taken from its node's pool, with
the same per-command machinery as its single-server client and more (slot lookup, retries,
redirection handling): about 40 µs of client CPU a call, twice a worker's CPU per run on one
node (measured: ``python bench/run.py cluster_clients``). The hot script calls need none of it:
each names its keys, all in one slot, so its master is known from the client's own slot map
(:meth:`RedisCluster.keyslot`, the nodes manager's slot cache) and the call can share that
master's :class:`~outlast.store.mux.Multiplexer` with the other callers — one connection per
master per client, made on first use.

The cluster client stays in charge of the topology. When a call meets a change:

- ``MOVED`` (a failover promoted a replica, or the slot was migrated): the slot is pointed at the
  node named, as redis-py's own client does, and the call is sent again there (a redirected call
  was not run, so sending it again is safe); moved once more, the whole map is read again.
- ``ASK`` (the slot is being migrated and the key already left): the call goes to the target node
  right after ``ASKING``, on that node's connection; the map is left as it is (the slot still
  belongs to the source until the migration ends).
- ``TRYAGAIN`` (a multi-key call during a migration), ``CLUSTERDOWN``, an uncovered slot: a short
  pause (and a fresh map), then again.
- a node that refuses connections (nothing was sent): the map is read again and the call sent
  where it now points (if it points elsewhere: before a replica is promoted it fails, and the
  caller retries later); a connection lost with calls under way fails them (they may have run,
  as on one server: the store's callers retry fenced writes) and the map is read again.

Waited commits (a script call then ``WAIT``/``WAITAOF``, which covers the writes made earlier on
its own connection and names no key) take the same route over a second multiplexer per master,
as on one server (:attr:`~outlast.store.client.OutlastPool.commit_multiplexer`): a wait blocks
only the commits behind it, never claims or reads, and the commits written while it blocks
share the next one. After ``ASK`` the pair goes to the target as ``ASKING``, script, wait.

The map is read again once for all callers meeting a change at a time, and at most every
:data:`REFRESH_INTERVAL`.

Masters the fresh map no longer lists lose their connection once the replies owed on it have
arrived. Closing the cluster client closes every connection here too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool

from outlast.store.mux import ConnectFailed, Multiplexer

_T = TypeVar("_T")
#: How many times one call follows a redirection or a refusing node before it gives up.
ATTEMPTS = 5
#: The slot map is read again at most this often (seconds).
REFRESH_INTERVAL = 0.1
#: Replies while a migration or an election is under way: wait a little, then try again.
_SETTLING = (redis_errors.TryAgainError, redis_errors.ClusterDownError, redis_errors.SlotNotCoveredError)
_UNREACHABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.RedisClusterException,  # (the map could not be read: no node answered)
    OSError,
)


class NodeMultiplexers:
    """A :class:`~outlast.store.mux.Multiplexer` per master of ``cluster``, for commands whose keys
    all lie in one slot (scripts, HGETALL, HMGET, XRANGE…). Same interface as a Multiplexer:
    :meth:`execute` gives the raw reply or raises redis-py's exception classes."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._muxes: dict[str, Multiplexer] = {}
        self._commit_muxes: dict[str, Multiplexer] = {}  # (script + WAIT pairs, see execute_then_wait)
        self._refreshes = 0
        self._refreshed_at = float("-inf")
        self._refresh_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Redirections followed (MOVED and ASK replies), and slot maps read again: for tests.
        self.redirects = 0

    @property
    def usable(self) -> bool:
        """As :attr:`Multiplexer.usable`, for the cluster's connection settings (TLS clusters and
        credential providers go through redis-py's cluster client)."""
        kwargs: dict[str, Any] = dict(self.cluster.get_connection_kwargs())
        kwargs.pop("response_callbacks", None)
        return Multiplexer(ConnectionPool(**kwargs)).usable

    @property
    def refreshes(self) -> int:
        return self._refreshes

    def connections(self, *, commits: bool = False) -> dict[str, Multiplexer]:
        """Node name (``host:port``) → its multiplexer (``commits``: its commit multiplexer), for
        the masters used so far."""
        return dict(self._commit_muxes if commits else self._muxes)

    async def execute(self, *args: Any) -> Any:
        """Send one command to the master of its first key's slot; its reply."""
        command = args[0]
        if command in ("EVALSHA", "EVAL"):
            key = args[3] if int(args[2]) > 0 else None
        else:
            key = args[1] if len(args) > 1 else None
        if key is None:  # nothing to route by: redis-py picks a node
            return await self.cluster.execute_command(*args)

        def send(node: ClusterNode, asking: bool) -> Awaitable[Any]:
            mux = self._mux(node, self._muxes)
            return mux.execute_asking(*args) if asking else mux.execute(*args)

        return await self.route(key, send)

    async def execute_then_wait(self, wait: tuple[Any, ...], *args: Any) -> tuple[Any, Any]:
        """As :meth:`Multiplexer.execute_then_wait`: a script call (``EVALSHA sha n key…``) then
        ``wait`` (WAIT/WAITAOF) on the commit connection of the master of its first key's slot —
        a second connection per master beside the hot one, so a blocked wait holds up only other
        commits to that master (which share its waits: group commit)."""

        def send(node: ClusterNode, asking: bool) -> Awaitable[tuple[Any, Any]]:
            return self._mux(node, self._commit_muxes).execute_then_wait(wait, *args, asking=asking)

        reply: tuple[Any, Any] = await self.route(args[3], send)
        return reply

    async def route(self, key: Any, send: Callable[[ClusterNode, bool], Awaitable[_T]]) -> _T:
        """``send(master, asking)`` to the master of ``key``'s slot, following the topology
        changes it meets (see the module's docstring); ``asking``: after ``ASKING``."""
        await self.cluster.initialize()  # (a no-op once the client knows the slots)
        asking: ClusterNode | None = None
        for attempt in range(ATTEMPTS):
            seen = self._refreshes
            node: ClusterNode | None = None
            try:
                if asking is not None:
                    node, asking = asking, None
                    return await send(node, True)
                node = self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(key))
                return await send(node, False)
            except redis_errors.MovedError as exc:  # (before AskError: it is a subclass)
                self.redirects += 1
                if attempt == 0:
                    self._follow(exc)
                else:  # moved again: the map is further behind than this one slot
                    await self._refresh(seen)
            except redis_errors.AskError as exc:
                self.redirects += 1
                asking = self.cluster.get_node(exc.host, exc.port)
                if asking is None:  # a node the map does not know yet
                    await self._refresh(seen)
            except _SETTLING:
                await asyncio.sleep(0.05 * (attempt + 1))  # a migration or an election under way
                with contextlib.suppress(*_UNREACHABLE):
                    await self._refresh(seen)
            except ConnectFailed:  # not sent: the node is gone, maybe replaced
                with contextlib.suppress(*_UNREACHABLE):
                    await self._refresh(seen)
                now = self.cluster.nodes_manager.slots_cache.get(self.cluster.keyslot(key))
                if node is None or not now or now[0].name == node.name:
                    raise  # (not replaced yet: the caller retries later)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                with contextlib.suppress(*_UNREACHABLE):  # lost under way: it may have run
                    await self._refresh(seen)
                raise
        raise redis_errors.ConnectionError(f"the slot of {key!r} kept moving; try again")

    def _follow(self, moved: redis_errors.MovedError) -> None:
        """Point the slot at the node ``moved`` names, as redis-py's cluster client does (its
        nodes manager applies a recorded MOVED at the next lookup, done here at once): no other
        slot changes and no node object is replaced."""
        nodes = self.cluster.nodes_manager
        nodes._moved_exception = moved
        nodes.get_node_from_slot(moved.slot_id)

    @staticmethod
    def _mux(node: ClusterNode, muxes: dict[str, Multiplexer]) -> Multiplexer:
        mux = muxes.get(node.name)
        if mux is None:
            pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            mux = muxes[node.name] = Multiplexer(pool)
        return mux

    async def _refresh(self, seen: int) -> None:
        """Read the slot map again, unless another caller did since this one's call (``seen``) or
        it was read less than :data:`REFRESH_INTERVAL` ago. (Each reading replaces redis-py's
        node objects, closing their connections: not something to do for every failed call.)"""
        loop = asyncio.get_running_loop()
        if self._refresh_lock is None or self._loop is not loop:
            self._refresh_lock, self._loop = asyncio.Lock(), loop
        async with self._refresh_lock:
            if self._refreshes != seen or loop.time() < self._refreshed_at + REFRESH_INTERVAL:
                return
            try:
                await self.cluster.nodes_manager.initialize()
            finally:
                self._refreshed_at = loop.time()
            self._refreshes += 1
            masters = {node.name for node in self.cluster.get_primaries()}
            gone = [
                muxes.pop(name)
                for muxes in (self._muxes, self._commit_muxes)
                for name in list(muxes)
                if name not in masters
            ]
        await asyncio.gather(*(mux.retire() for mux in gone))

    async def aclose(self) -> None:
        """Close every connection once the replies owed on it have arrived (a later call opens
        new ones)."""
        muxes, self._muxes = self._muxes, {}
        commits, self._commit_muxes = self._commit_muxes, {}
        await asyncio.gather(*(mux.retire() for mux in (*muxes.values(), *commits.values())))
