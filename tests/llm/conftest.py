"""Fixtures the LLM tests share: simulator servers and a fleet's independent connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from outlast.llm.simulator import SimulatorServer
from outlast.store.client import redis_from_url


@pytest.fixture
def primary() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=1) as server:
        yield server


@pytest.fixture
def fallback() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=2) as server:
        yield server


@pytest.fixture
async def fleet(
    redis_url: str, redis: aioredis.Redis
) -> AsyncIterator[Callable[[int], list[aioredis.Redis]]]:
    """``fleet(n)``: n independent connections, standing in for separate worker processes (made
    after ``redis`` flushed the database; closed at the end of the test)."""
    opened: list[aioredis.Redis] = []

    def connect(n: int) -> list[aioredis.Redis]:
        clients = [redis_from_url(redis_url) for _ in range(n)]  # (a cluster URL too)
        opened.extend(clients)
        return clients

    yield connect
    for client in opened:
        await client.aclose()
