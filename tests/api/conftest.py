"""Servers for the API tests, shared by them all: a real worker and real uvicorn API processes.

They use database 5 of the session's Valkey: the ``redis`` fixture of other tests flushes
database 0 before each test, which would wipe the worker's registry and consumer group. The
whole set runs twice (``servers`` is parametrised): on that Valkey, and on the session's 3-master
cluster (``redis+cluster://``, flushed once when the set starts; a cluster has only database 0,
and no cluster-marked test of another package runs while this package's tests do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis as redis_sync

from outlast.client import AsyncClient
from outlast.store.client import RedisClient, redis_from_url
from outlast.store.embedded import EmbeddedServer, free_port
from outlast.store.embedded_cluster import EmbeddedCluster

from .support import ApiServer, Proc, spawn_worker

DB = 5
KEYS = {"key-a": "tenant-a", "key-b": "tenant-b", "key-list": "tenant-list"}


@dataclass
class Servers:
    redis_url: str
    cluster: bool
    worker: Proc
    api: ApiServer  # open mode, fast keep-alives
    keyed: ApiServer  # OUTLAST_API_KEYS via the environment, uvicorn --factory, default settings
    dead: ApiServer  # its Redis is not there


@pytest.fixture(scope="package", params=["valkey", "cluster"])  # stopped once the API tests are done
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    cluster = request.param == "cluster"
    if cluster:
        nodes: EmbeddedCluster = request.getfixturevalue("valkey_cluster")
        url = nodes.url
        for node in nodes.masters:
            with redis_sync.Redis(host="127.0.0.1", port=node.port) as client:
                client.flushall()
    else:
        server: EmbeddedServer = request.getfixturevalue("valkey_server")
        url = server.url.rsplit("/", 1)[0] + f"/{DB}"
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
        yield Servers(url, cluster, worker, api, keyed, dead)
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
async def store_redis(servers: Servers) -> AsyncIterator[RedisClient]:
    """A client to the API tests' database (gates, trimming)."""
    client = redis_from_url(servers.redis_url)
    yield client
    await client.aclose()
