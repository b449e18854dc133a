"""Waited commits on a cluster: the script and its WAIT/WAITAOF on one connection to one master.

``WAIT`` covers the writes made earlier *on its own connection*, and it names no key, so redis-py's
cluster client cannot route it next to a script call (its cluster pipeline refuses scripts). Here
the script's first key picks the master of its slot from the cluster client's slot map, and the
pair goes over a single-server client of that node (its multiplexed commit connection, see
:class:`~outlast.store.commands.HotPath`): commits to one master share its waits.

After a failover the slot map is stale: a dead master refuses connections, a demoted one answers
``MOVED``. The map is refreshed then (once for all callers at a time); a ``MOVED`` call is retried
on the new master at once, a connection error is raised (the writer retries the same append
after a pause; appended seqs are skipped, so a retry after a lost reply is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript

from outlast.store.client import OutlastPool

if TYPE_CHECKING:
    from outlast.store.commands import HotPath

_REROUTE = (redis_errors.MovedError, redis_errors.AskError, redis_errors.TryAgainError)
_UNREACHABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    OSError,
)


class NodeCommits:
    """Script + wait pairs for the masters of a cluster client (see the module's docstring)."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        # Shared by every store of the client, and closed with it when it is Outlast's own
        # (cluster.OutlastCluster); a client made elsewhere keeps them until the process ends.
        clients = getattr(cluster, "commit_clients", None)
        self.clients: dict[str, aioredis.Redis] = clients if isinstance(clients, dict) else {}
        self._paths: dict[str, HotPath] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshes = 0

    def _path(self, node: ClusterNode) -> HotPath:
        from outlast.store.commands import HotPath  # (commands imports this module)

        path = self._paths.get(node.name)
        client = self.clients.get(node.name)
        if client is None:
            pool = OutlastPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = self.clients[node.name] = aioredis.Redis(connection_pool=pool)
            client.auto_close_connection_pool = True
        if path is None or path.redis is not client:
            path = self._paths[node.name] = HotPath(client)
        return path

    async def script_then_wait(
        self, script: AsyncScript, keys: list[Any], args: list[Any], wait: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        await self.cluster.initialize()  # (a no-op once the client knows the slots)
        for _ in range(3):
            seen = self._refreshes
            node = self.cluster.get_node_from_key(keys[0])
            if node is None:  # (only asked for a replica can it be None)
                raise redis_errors.ConnectionError(f"no master serves the slot of {keys[0]!r}")
            try:
                return await self._path(node).script_then_wait(script, keys, args, wait)
            except _UNREACHABLE:
                with contextlib.suppress(*_UNREACHABLE):
                    await self._refresh(seen)
                raise
            except redis_errors.ResponseError as exc:
                # (A single-server client does not know the cluster's replies: they come as
                # plain ResponseErrors, named by their first word.)
                code = str(exc).split(" ", 1)[0]
                down = code == "CLUSTERDOWN" or isinstance(exc, redis_errors.ClusterDownError)
                if not (down or isinstance(exc, _REROUTE) or code in ("MOVED", "ASK", "TRYAGAIN")):
                    raise
                with contextlib.suppress(*_UNREACHABLE):
                    await self._refresh(seen)  # the slot moved (a failover): ask again, then retry
                if down:  # mid-failover: the writer retries after a pause
                    raise redis_errors.ConnectionError(str(exc)) from exc
        raise redis_errors.ConnectionError(f"the slot of {keys[0]!r} kept moving; try again")

    async def _refresh(self, seen: int) -> None:
        async with self._refresh_lock:
            if self._refreshes == seen:  # nobody refreshed the map while this caller waited
                await self.cluster.nodes_manager.initialize()
                self._refreshes += 1
