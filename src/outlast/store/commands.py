"""Redis commands the store's modules share: the hot path over the multiplexed connection, hash
replies, the server clock."""

from __future__ import annotations

from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from outlast.store.client import RedisClient, multiplexer_of
from outlast.store.errors import guard
from outlast.store.node_commits import NodeCommits, pipelined_pair


async def server_ms(redis: RedisClient) -> int:
    """The server's clock in ms: leases and timers are compared with it, so hosts agree."""
    seconds, micros = await guard(redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


def hash_reply(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash read as a flat field/value list (HGETALL's raw reply, or one returned by a script)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class HotPath:
    """The store's frequent commands over the client's multiplexed connection (auto-pipelining).

    Under load a worker runs hundreds of attempts at once; their claims and appends then share
    one socket write and one read instead of paying a syscall and a task switch each, and an
    idle worker's call goes out at once (see :mod:`outlast.store.mux`). A client not made by
    :func:`~outlast.store.client.redis_from_url` has no such connection: calls go through
    redis-py. Calls are independent (not a transaction).
    """

    def __init__(self, redis: RedisClient, *, shared_waits: bool = False) -> None:
        """``shared_waits``: commit waits go over the main multiplexed connection rather than one
        of their own (for the benchmark that compares both)."""
        self.redis = redis
        mux = multiplexer_of(redis)
        self._mux = mux if mux is not None and mux.usable else None
        commit_mux = self._mux if shared_waits else multiplexer_of(redis, commits=True)
        # (on a cluster: the per-master commit multiplexers, routed by slot)
        self._commit_mux = commit_mux if self._mux else None
        # A cluster without multiplexers: a pipeline to the master of the keys' slot.
        piped = self._commit_mux is None
        self._nodes = NodeCommits(redis) if piped and isinstance(redis, RedisCluster) else None

    async def script_then_wait(
        self, script: AsyncScript, keys: list[Any], args: list[Any], wait: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        """Call a script, then ``wait`` (WAIT/WAITAOF) on the same connection: (script's reply,
        wait's reply), over the commit multiplexer (on a cluster: that of the master of the keys'
        slot, see :meth:`~outlast.store.node_mux.NodeMultiplexers.execute_then_wait`). Without a
        multiplexer, the pair is one redis-py pipeline (one connection; on a cluster, to the
        master of the keys' slot, see :mod:`outlast.store.node_commits`)."""
        if self._nodes is not None:
            return await self._nodes.script_then_wait(script, keys, args, wait)
        if self._commit_mux is None:
            return await pipelined_pair(self.redis, script, keys, args, wait)
        try:
            reply: tuple[Any, Any] = await self._commit_mux.execute_then_wait(
                wait, "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except redis_errors.NoScriptError:
            await self.redis.script_load(script.script)
            reply = await self._commit_mux.execute_then_wait(
                wait, "EVALSHA", script.sha, len(keys), *keys, *args
            )
        return reply

    async def script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Call a script; one the server lost (a restart) is loaded and called again."""
        if self._mux is None:
            return await script(keys=keys, args=args)
        try:
            return await self._mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await self.redis.script_load(script.script)
            return await self._mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """HGETALL, as a dict of bytes."""
        if self._mux is None:
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[misc]
            return raw
        return hash_reply(await self._mux.execute("HGETALL", key))

    async def hmget(self, key: str, fields: list[str]) -> list[bytes | None]:
        """HMGET: the values of ``fields`` (None where missing)."""
        if self._mux is None:
            raw: list[bytes | None] = await self.redis.hmget(key, fields)  # type: ignore[misc]
            return raw
        return list(await self._mux.execute("HMGET", key, *fields))

    async def xrange(self, key: str, after: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """XRANGE ``key`` from the exclusive id ``after`` (e.g. ``(0-5``), at most ``count`` entries,
        as redis-py returns them: (entry id, fields)."""
        if self._mux is None:
            raw: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(key, min=after, count=count)
            return raw
        reply = await self._mux.execute("XRANGE", key, after, "+", "COUNT", count)
        return [(entry_id, hash_reply(flat)) for entry_id, flat in reply]
