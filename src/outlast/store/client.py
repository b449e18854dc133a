"""The asyncio Redis clients Outlast creates: redis-py, with commands packed by hiredis.

redis-py's sync connections pack commands with ``hiredis.pack_command`` when hiredis is
installed, but its asyncio connections pack them in pure Python: about 30 µs a command, the
largest single cost in a busy worker (every claim and append is a script call with a dozen
arguments). These connection classes pack the asyncio way's commands with hiredis too; replies
are parsed by hiredis either way.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        # Same rules as redis-py's packer: a command name given with spaces ("CONFIG GET") is
        # split; bool/None/containers are refused (hiredis raises TypeError for them).
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(f"cannot send {args[0]!r}: {exc}") from exc


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


def redis_from_url(url: str, **options: Any) -> aioredis.Redis:
    """``redis.asyncio.Redis.from_url`` with hiredis packing for the connection type it picked."""
    client: aioredis.Redis = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class = _FASTER.get(pool.connection_class, pool.connection_class)
    return client
