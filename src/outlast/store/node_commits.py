"""Waited commits on a cluster whose connections the multiplexers do not serve (TLS, credential
providers, decoded replies, ``OUTLAST_MULTIPLEX=0``, a cluster client not made by Outlast).

``WAIT`` covers the writes made earlier *on its own connection*, and it names no key, so redis-py's
cluster client cannot send it next to a script call (its cluster pipeline refuses scripts). Here
the pair (after ``ASKING`` when the slot is being migrated) is one redis-py pipeline over a
single-server client of the master of the script's first key, routed and redirected as the
multiplexed path routes them (:meth:`~outlast.store.node_mux.NodeMultiplexers.route`). The usual
path is :meth:`~outlast.store.node_mux.NodeMultiplexers.execute_then_wait`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, ClusterParser, RedisCluster
from redis.commands.core import AsyncScript

from outlast.store.client import OutlastPool
from outlast.store.node_mux import NodeMultiplexers


async def pipelined_pair(
    client: aioredis.Redis | RedisCluster,
    script: AsyncScript,
    keys: list[Any],
    args: list[Any],
    wait: tuple[Any, ...],
    *,
    asking: bool = False,
    cluster_errors: bool = False,
) -> tuple[Any, Any]:
    """A script call and ``wait`` as one redis-py pipeline (one connection): (script's reply,
    wait's reply). A script the server lost is loaded and the pair sent again; ``asking`` sends
    ``ASKING`` first; ``cluster_errors`` raises MOVED/ASK… replies as redis-py's cluster errors.
    Also the single-server path of :meth:`~outlast.store.commands.HotPath.script_then_wait`."""
    for loaded in (False, True):
        async with client.pipeline(transaction=False) as pipe:
            if asking:
                pipe.execute_command("ASKING")
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command(*wait)
            *_, reply, waited = await pipe.execute(raise_on_error=False)
        if isinstance(reply, redis_errors.NoScriptError) and not loaded:
            await client.script_load(script.script)
            continue
        for result in (reply, waited):
            if cluster_errors and isinstance(result, redis_errors.ResponseError):
                raise ClusterParser.parse_error(str(result))
            if isinstance(result, Exception):
                raise result
        break
    return reply, waited


class NodeCommits:
    """Script + wait pairs as pipelines to the masters of a cluster client (see the module)."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        # Shared by every store of the client, and closed with it when it is Outlast's own
        # (cluster.OutlastCluster); a client made elsewhere keeps them until the process ends.
        clients = getattr(cluster, "commit_clients", None)
        self.clients: dict[str, aioredis.Redis] = clients if isinstance(clients, dict) else {}
        muxes = getattr(cluster, "multiplexers", None)  # (its map rereads are shared)
        self.router = muxes if isinstance(muxes, NodeMultiplexers) else NodeMultiplexers(cluster)

    def _client(self, node: ClusterNode) -> aioredis.Redis:
        client = self.clients.get(node.name)
        if client is None:
            pool = OutlastPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = self.clients[node.name] = aioredis.Redis(connection_pool=pool)
            client.auto_close_connection_pool = True
        return client

    async def script_then_wait(
        self, script: AsyncScript, keys: list[Any], args: list[Any], wait: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        async def send(node: ClusterNode, asking: bool) -> tuple[Any, Any]:
            # (a single-server client reads MOVED/ASK… as plain ResponseErrors: parsed here)
            return await pipelined_pair(
                self._client(node), script, keys, args, wait, asking=asking, cluster_errors=True
            )

        return await self.router.route(keys[0], send)
