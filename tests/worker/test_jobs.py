"""Small shared pieces of the compute plane."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outlast.worker.jobs import redis_url_of

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/9",
        "rediss://alice:p%40ss%3Aword@cache.example:6380/3",
        "redis://:only-a-password@10.0.0.5:7000/0",
    ],
)
async def test_the_heartbeat_thread_connects_where_the_worker_does(url: str) -> None:
    # The renewer thread and launched processes open their own connections from this URL:
    # dropping TLS, the user or the password would make every lease expire.
    client = aioredis.Redis.from_url(url)
    try:
        assert redis_url_of(client) == url
        again = aioredis.Redis.from_url(redis_url_of(client))
        kw, kw2 = client.connection_pool.connection_kwargs, again.connection_pool.connection_kwargs
        assert {k: kw2.get(k) for k in ("host", "port", "db", "username", "password")} == {
            k: kw.get(k) for k in ("host", "port", "db", "username", "password")
        }
        assert again.connection_pool.connection_class is client.connection_pool.connection_class
        await again.aclose()
    finally:
        await client.aclose()
