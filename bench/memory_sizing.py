"""Redis memory per run and per event, for sizing a deployment (docs/deploy.md quotes these figures).

Runs N runs of a workflow that writes M events each (a custom event with a ~100-byte payload, or
streamed text in ~4-character tokens), in a fresh embedded Valkey with nothing else in it, and
reads ``INFO memory`` (used_memory) before and after, and ``MEMORY USAGE`` of each key of one run.
Two values of M give the cost of one event (the slope) and of a run with no events (the intercept).

    python bench/memory_sizing.py            # or: python bench/run.py memory
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import outlast
from outlast.store import keys
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.store.redis import RedisStore

RUNS = 200
PAYLOAD = "x" * 80  # with the event's envelope and keys: a ~100-byte custom event


@outlast.component
async def step(i: int) -> int:
    return i


@outlast.workflow(name="sized_events")
async def sized_events(events: int) -> int:
    await step(0)
    for i in range(events):
        outlast.emit("tick", {"i": i, "text": PAYLOAD})
    return events


@outlast.workflow(name="sized_steps")
async def sized_steps(steps: int) -> int:
    for i in range(steps):
        await step(i)
    return steps


@outlast.component
async def speak(tokens: int) -> Any:
    for i in range(tokens):
        yield f"w{i % 10} "  # ~4 characters a token, as a model streams them


@outlast.workflow(name="sized_tokens")
async def sized_tokens(tokens: int) -> str:
    return str(await speak(tokens))


async def _measure(wf: Any, arg: str, value: int) -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as data, EmbeddedServer(data, appendonly=False) as server:
        return await _measure_on(server.url, wf, arg, value)


async def _measure_on(url: str, wf: Any, arg: str, value: int) -> tuple[float, dict[str, int]]:
    client = redis_from_url(url)
    try:
        await client.ping()
        await client.script_load("return 1")  # the script cache exists before the first reading
        before = int((await client.info("memory"))["used_memory"])
        runner = outlast.Runner(RedisStore(client))
        run_ids = []
        for start in range(0, RUNS, 20):  # 20 at a time
            batch = [
                runner.run(wf, {arg: value}, run_id=f"{wf.name}-{value}-{i}")
                for i in range(start, start + 20)
            ]
            await asyncio.gather(*batch)
            run_ids.extend(f"{wf.name}-{value}-{i}" for i in range(start, start + 20))
        after = int((await client.info("memory"))["used_memory"])
        sample = keys.run_keys(run_ids[0])
        usage = {}
        for name in ("meta", "events", "steps", "objects"):
            usage[name] = int(await client.memory_usage(getattr(sample, name)) or 0)
        usage["stream entries"] = int(await client.xlen(sample.events))
        return (after - before) / RUNS, usage
    finally:
        await client.aclose()


async def main() -> None:
    print(f"memory sizing: {RUNS} runs per row, a fresh Valkey per row, used_memory delta / run")
    print(f"{'workflow':<14}{'per run':>8}{'bytes/run':>11}   MEMORY USAGE of one run's keys")
    rows: dict[str, list[tuple[int, float]]] = {"events": [], "tokens": [], "steps": []}
    for wf, arg, kind, values in (
        (sized_steps, "steps", "steps", (1, 20)),
        (sized_events, "events", "events", (10, 200)),
        (sized_tokens, "tokens", "tokens", (100, 2000)),
    ):
        for value in values:
            per_run, usage = await _measure(wf, arg, value)
            rows[kind].append((value, per_run))
            detail = ", ".join(f"{k} {v}" for k, v in usage.items())
            print(f"{wf.name:<14}{value:>8}{per_run:>11.0f}   {detail}")
    (m1, b1), (m2, b2) = rows["events"]
    per_event = (b2 - b1) / (m2 - m1)
    print(f"=> one ~100-byte custom event: {per_event:.0f} bytes; a run with one step and no "
          f"events: {b1 - per_event * m1:.0f} bytes")  # fmt: skip
    (s1, d1), (s2, d2) = rows["steps"]
    print(f"=> one more step (a small argument and result): {(d2 - d1) / (s2 - s1):.0f} bytes")
    (t1, c1), (t2, c2) = rows["tokens"]
    per_token = (c2 - c1) / (t2 - t1)
    print(
        f"=> one streamed ~4-char token (coalesced into frames): {per_token:.1f} bytes; "
        f"1,000 tokens: {per_token * 1000 / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    asyncio.run(main())
