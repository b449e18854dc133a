"""A real Valkey database, worker and API for the browser-client tests (see :mod:`.stack`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_sync

from outlast.store.embedded import EmbeddedServer

from .stack import Stack

DB = 6  # the session Valkey's database 0 is flushed by other tests, 5 is the API tests'


@pytest.fixture(scope="package")
def stack(valkey_server: EmbeddedServer) -> Iterator[Stack]:
    url = valkey_server.url.rsplit("/", 1)[0] + f"/{DB}"
    with redis_sync.Redis.from_url(url) as client:
        client.flushdb()
    running = Stack(url)
    yield running
    running.stop()
