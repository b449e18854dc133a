"""The registry cache's subscription outlives idle spells longer than its client's socket timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from outlast.control.registry import RegistryCache
from outlast.store import keys
from outlast.store.client import redis_from_url
from outlast.store.pubsub import publish

pytestmark = pytest.mark.cluster


async def test_an_idle_subscription_is_not_lost_to_the_socket_timeout(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The API's client has a socket timeout (its blocking reads need one); a quiet deploy channel
    must not read as a lost connection, or every start pays the round trips the cache saves."""
    client = redis_from_url(redis_url, socket_timeout=0.3)
    cache = RegistryCache(client)
    try:
        with caplog.at_level(logging.WARNING, logger="outlast"):
            await cache.active()
            await asyncio.wait_for(cache.subscribed.wait(), 5)
            await asyncio.sleep(1.0)  # the idle spell under test: > 3 socket timeouts without a message
            assert cache.subscribed.is_set()
            await publish(client, keys.DEPLOY_CHANNEL, "promote")
            await asyncio.wait_for(cache.changed.wait(), 5)
        assert not [r for r in caplog.records if "subscription lost" in r.getMessage()]
    finally:
        await cache.aclose()
        await client.aclose()
