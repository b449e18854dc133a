"""Which run answers a chat now: ``chat id → run id``, for the AI SDK's resume call.

A chat's messages are answered one run each. ``POST /v1/chat/<workflow>`` records the run it
started (or found, for a repeated request) and ``GET /v1/chat/<workflow>/<chat_id>/stream``
reads it back. Two requests of one chat can race (a retried POST of an earlier message, two
tabs): the record only ever moves forward to a newer run (run ids are time-ordered), in one
script, so an older request never hides the answer in progress.
"""

from __future__ import annotations

from typing import Final

from outlast.store import keys
from outlast.store.client import RedisClient, register_script
from outlast.store.errors import guard

#: KEYS[1] the chat key; ARGV run id, TTL seconds. Returns the run id the chat points at now.
SET_NEWER: Final = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""


def tenant_scope(tenant: str | None) -> str:
    """A tenant's part of a key: length-prefixed, so no tenant's scope is a prefix of another's."""
    return "" if tenant is None else f"t{len(tenant)}:{tenant}"


class ChatIndex:
    """The ``outlast:chat:…`` records (see :func:`outlast.store.keys.chat_key`)."""

    def __init__(self, redis: RedisClient, ttl: float) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl))
        self._set_newer = register_script(redis, SET_NEWER)

    async def record(self, workflow: str, tenant: str | None, chat_id: str, run_id: str) -> str:
        """Point the chat at ``run_id`` unless it already points at a newer run; returns its run."""
        key = keys.chat_key(workflow, tenant_scope(tenant), chat_id)
        current: bytes = await guard(self._set_newer(keys=[key], args=[run_id, self.ttl]))
        return current.decode() if isinstance(current, bytes) else str(current)

    async def current(self, workflow: str, tenant: str | None, chat_id: str) -> str | None:
        raw: bytes | None = await guard(
            self.redis.get(keys.chat_key(workflow, tenant_scope(tenant), chat_id))
        )
        return None if raw is None else raw.decode()
