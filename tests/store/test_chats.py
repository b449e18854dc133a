"""The chat → current run record: tenant-scoped, and it only ever moves to a newer run."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outlast.ids import new_run_id
from outlast.store import keys
from outlast.store.chats import ChatIndex, tenant_scope

pytestmark = pytest.mark.cluster


async def test_a_chat_points_at_its_newest_run_in_whatever_order_it_is_told(redis: aioredis.Redis) -> None:
    chats = ChatIndex(redis, ttl=3600)
    older, newer = sorted([new_run_id(), new_run_id()])  # run ids are time-ordered
    assert await chats.current("chat", None, "c1") is None
    assert await chats.record("chat", None, "c1", newer) == newer
    assert await chats.record("chat", None, "c1", older) == newer  # a retried earlier POST
    assert await chats.current("chat", None, "c1") == newer
    ttl = await redis.ttl(keys.chat_key("chat", tenant_scope(None), "c1"))
    assert 3500 < ttl <= 3600


async def test_chats_of_tenants_and_workflows_are_apart(redis: aioredis.Redis) -> None:
    chats = ChatIndex(redis, ttl=60)
    run = new_run_id()
    await chats.record("chat", "acme", "c1", run)
    assert await chats.current("chat", "acme", "c1") == run
    assert await chats.current("chat", "globex", "c1") is None
    assert await chats.current("chat", None, "c1") is None
    assert await chats.current("other", "acme", "c1") is None
    # Length-prefixed scopes: no tenant's scope is a prefix of another's.
    assert keys.chat_key("w", tenant_scope("a"), "b:c1") != keys.chat_key("w", tenant_scope("a:b"), "c1")
