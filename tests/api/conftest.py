"""Servers for the API tests, shared by them all: a real worker and real uvicorn API processes.

They use database 5 of the session's Valkey: the ``redis`` fixture of other tests flushes
database 0 before each test, which would wipe the worker's registry and consumer group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from outlast.client import AsyncClient
from outlast.store.embedded import EmbeddedServer, free_port

from .support import ApiServer, Proc, spawn_worker

DB = 5
KEYS = {"key-a": "tenant-a", "key-b": "tenant-b", "key-list": "tenant-list"}


@dataclass
class Servers:
    redis_url: str
    worker: Proc
    api: ApiServer  # open mode, fast keep-alives
    keyed: ApiServer  # OUTLAST_API_KEYS via the environment, uvicorn --factory, default settings
    dead: ApiServer  # its Redis is not there


@pytest.fixture(scope="package")  # stopped once the API tests are done, not at the session's end
def servers(valkey_server: EmbeddedServer) -> Iterator[Servers]:
    url = valkey_server.url.rsplit("/", 1)[0] + f"/{DB}"
    with redis_sync.Redis.from_url(url) as client:
        client.flushdb()
    keys_env = {"OUTLAST_API_KEYS": ",".join(f"{k}:{t}" for k, t in KEYS.items())}
    worker = spawn_worker(url, "--concurrency", "300")
    api = ApiServer(url)
    keyed = ApiServer(url, factory_env=keys_env)
    dead = ApiServer(f"redis://127.0.0.1:{free_port()}/0")
    started = [worker, api.proc, keyed.proc, dead.proc]
    try:
        for proc in started:
            proc.wait_ready()
        yield Servers(url, worker, api, keyed, dead)
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def api(servers: Servers) -> ApiServer:
    return servers.api


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def client(api: ApiServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api.base_url, reconnect_for=20) as c:
        yield c


@pytest.fixture
async def store_redis(servers: Servers) -> AsyncIterator[aioredis.Redis]:
    """A client to the API tests' database (gates, trimming)."""
    client = aioredis.Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()
