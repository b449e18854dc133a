"""Helpers shared by the tests of outlast.llm's client and providers (not a test module)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from outlast import events as ev
from outlast.llm import AnthropicProvider, OpenAIProvider, Price, Provider
from outlast.llm.simulator import SimulatorServer
from outlast.store.base import RunStore

MODEL = "outlast-sim"
KEY = "sk-test-0123456789abcdef"
PRICE = Price(input_per_mtok=2.0, output_per_mtok=8.0)


def openai_provider(sim: SimulatorServer, name: str = "primary", **options: Any) -> OpenAIProvider:
    options.setdefault("api_key", KEY)
    return OpenAIProvider(name, options.pop("model", MODEL), base_url=sim.base_url, **options)


def anthropic_provider(sim: SimulatorServer, name: str = "claude", **options: Any) -> AnthropicProvider:
    options.setdefault("api_key", KEY)
    return AnthropicProvider(name, options.pop("model", MODEL), base_url=sim.url, **options)


def provider(kind: str, sim: SimulatorServer, name: str = "primary", **options: Any) -> Provider:
    make = openai_provider if kind == "openai" else anthropic_provider
    return make(sim, name, **options)


def statuses(sim: SimulatorServer) -> dict[str, int]:
    counts: dict[str, int] = sim.stats()["requests_by_status"]
    return counts


def requests(sim: SimulatorServer) -> int:
    total: int = sim.stats()["total_requests"]
    return total


async def all_events(store: RunStore, run_id: str) -> list[ev.Event]:
    return [e async for e in store.read_events(run_id, follow=False)]


async def until(
    probe: Callable[[], Awaitable[bool] | bool], within: float = 10.0, every: float = 0.02
) -> None:
    """Poll an observable condition with a bounded deadline."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)
