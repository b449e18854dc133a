"""Connecting to the store: ``OUTLAST_REDIS_URL`` / an explicit URL, or a private embedded Valkey."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors

from outlast.errors import ConfigError, StoreUnavailable
from outlast.store.client import RedisClient, redis_from_url
from outlast.store.embedded import DEFAULT_DATA_DIR, EmbeddedServer

ENV_URL = "OUTLAST_REDIS_URL"


def redacted(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@asynccontextmanager
async def connect(
    url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None
) -> AsyncIterator[RedisClient]:
    """An asyncio Redis client, closed on exit.

    ``url`` (or ``OUTLAST_REDIS_URL``) selects an external server, or a cluster with a
    ``redis+cluster://host:port[,host:port…]`` URL (see :mod:`outlast.store.cluster`); with neither, a private
    Valkey is started with its data in ``data_dir`` (default ``.outlast/data``) and stopped
    on exit.
    """
    url = url or os.environ.get(ENV_URL) or None
    server: EmbeddedServer | None = None
    if url is None:
        server = EmbeddedServer(Path(data_dir) if data_dir else DEFAULT_DATA_DIR)
        await asyncio.to_thread(server.start)
        url = server.url
    try:
        client = redis_from_url(url)
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a Redis URL ({exc})") from None
    try:
        try:
            await client.ping()
        except (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            OSError,
            redis_errors.RedisClusterException,
        ) as exc:  # (the cluster client's "cannot be connected": no seed answered)
            where = redacted(url)
            if isinstance(exc, redis_errors.AuthenticationError):
                raise StoreUnavailable(
                    f"Redis at {where} refused the credentials: {exc}; check the user and password in the URL"
                ) from exc
            reason = str(exc).strip().rstrip(".") or type(exc).__name__
            raise StoreUnavailable(
                f"cannot reach Redis at {where} ({reason}); start `outlast dev` or `outlast server` "
                f"in your project folder, or set {ENV_URL} to a running server"
            ) from exc
        yield client
    finally:
        await client.aclose()
        if server is not None:
            await asyncio.to_thread(server.stop)
