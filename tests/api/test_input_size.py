"""An input too large for the events it is copied into is refused at start (a real API process)."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from outlast.sizes import MAX_INPUT_BYTES
from outlast.store import keys

from .test_errors import error_of


async def test_an_input_that_cannot_fit_its_events_is_a_422_and_nothing_is_queued(
    http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    before = await store_redis.zcard(keys.RUNS_INDEX)
    name = "x" * (MAX_INPUT_BYTES + 10_000)  # under the API's 1 MiB body limit, over the input limit
    response = await http.post("/v1/workflows/greet/runs", json={"input": {"name": name}})
    error = error_of(response, 422, "invalid_input")
    assert f"over the {MAX_INPUT_BYTES:,}-byte limit for a run's input" in error["message"]
    assert error["details"][0]["loc"] == ["input"]
    assert await store_redis.zcard(keys.RUNS_INDEX) == before
    just_fits = {"input": {"name": "x" * (MAX_INPUT_BYTES - 1_000)}}
    fits = await http.post("/v1/workflows/greet/runs", json=just_fits)
    assert fits.status_code == 202, fits.text
