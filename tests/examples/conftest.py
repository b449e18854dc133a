"""Fixtures for the examples' acceptance tests: real ``outlast worker examples.<name>`` processes
(the compute-plane tests' ``spawn_worker``, given ``app="examples.onboarding"``)."""

from __future__ import annotations

from outlast import events as ev
from outlast.store.redis import RedisStore

from ..worker.conftest import SpawnWorker, WorkerProcess, spawn_worker

__all__ = ["SpawnWorker", "WorkerProcess", "events_of", "owners", "spawn_worker"]


async def events_of(store: RedisStore, run_id: str) -> list[ev.Event]:
    return [e async for e in store.read_events(run_id, follow=False)]


def owners(events: list[ev.Event]) -> dict[int, str]:
    """attempt → the worker that ran it."""
    return {e.attempt: e.data["worker"] for e in events if e.type == ev.RUN_STARTED}
