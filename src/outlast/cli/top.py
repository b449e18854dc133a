"""``outlast top``: live workers, queues per version, LLM limiter usage and breakers, refreshed in place."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer
from redis import exceptions as redis_errors
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from outlast.cli.main import RedisOption, app, console, redis_url, run_async
from outlast.errors import StoreUnavailable
from outlast.store import keys
from outlast.store.client import RedisClient

_LLM_COST = f"{keys.PREFIX}:llm:{{llm:*}}:cost"
_LLM_BREAKERS = f"{keys.PREFIX}:llm:breaker:*"


async def _scan(redis: RedisClient, pattern: str) -> list[str]:
    found = [k async for k in redis.scan_iter(pattern, count=500)]
    return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)


async def snapshot(redis: RedisClient) -> dict[str, Any]:
    """Everything ``top`` shows, read from the store once (StoreUnavailable if Redis goes away)."""
    try:
        return await _snapshot(redis)
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreUnavailable(f"lost the store ({exc}); is `outlast dev` still running?") from exc


async def _snapshot(redis: RedisClient) -> dict[str, Any]:
    from outlast.control import Dispatcher

    dispatcher = Dispatcher(redis)
    deploy = await dispatcher.deploy_status()
    workers = await dispatcher.workers()
    now_ms = int(time.time() * 1000)
    limiter = []
    for key in await _scan(redis, _LLM_COST):
        tag = key[key.index("{llm:") + 5 : key.index("}")]
        provider, _, model = tag.partition(":")
        totals: list[Any] = await redis.hmget(key, ["R", "T"])  # type: ignore[misc]
        leases = key.removesuffix(":cost") + ":leases"
        in_flight = await redis.zcount(leases, now_ms, "+inf")
        limiter.append(
            {
                "provider": provider, "model": model, "requests": int(totals[0] or 0),
                "tokens": int(totals[1] or 0), "in_flight": int(in_flight),
            }
        )  # fmt: skip
    breakers = []
    for key in await _scan(redis, _LLM_BREAKERS):
        provider = key[key.index("{llmbreaker:") + 12 : key.rindex("}")]
        state: bytes | None = await redis.hget(key, "state")  # type: ignore[misc]
        breakers.append({"provider": provider, "state": (state or b"closed").decode()})
    return {"deploy": deploy, "workers": workers, "limiter": limiter, "breakers": breakers}


def render(snap: dict[str, Any]) -> RenderableType:
    workers = Table("worker", "version", "slots used", "state", "pid", "heartbeat", title="workers", box=None)
    for w in snap["workers"]:
        used = f"{len(w.get('running', []))}/{w.get('concurrency', '?')}"
        state = "draining" if w.get("draining") else "serving"
        age = f"{float(w.get('heartbeat_age', 0.0)):.1f}s ago"  # (on the server's clock)
        workers.add_row(str(w["id"]), str(w["version"]), used, state, str(w.get("pid")), age)
    active = snap["deploy"]["active"] or "none"
    title = f"versions (active: {active})"
    versions = Table("version", "workers", "queued", "in flight", "state", title=title, box=None)
    for v in snap["deploy"]["versions"]:
        versions.add_row(v["version"], str(v["workers"]), str(v["queued"]), str(v["in_flight"]), v["state"])
    parts: list[RenderableType] = [workers if snap["workers"] else Text("no live workers"), versions]
    if snap["limiter"] or snap["breakers"]:
        llm = Table("provider", "model", "requests", "tokens", "in flight", "breaker", title="LLM", box=None)
        states = {b["provider"]: b["state"] for b in snap["breakers"]}
        for row in snap["limiter"]:
            state = states.pop(row["provider"], "closed")
            llm.add_row(
                row["provider"], row["model"], str(row["requests"]), str(row["tokens"]),
                str(row["in_flight"]), state,
            )  # fmt: skip
        for provider, state in states.items():
            llm.add_row(provider, "-", "-", "-", "-", state)
        parts.append(llm)
    else:
        parts.append(Text("LLM: no calls in the current window"))
    return Group(*parts)


@app.command()
def top(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    once: Annotated[bool, typer.Option(help="Print once and exit (always so when not a terminal).")] = False,
    redis: RedisOption = None,
) -> None:
    """Workers (version, slots used, draining), queues per version, LLM limits and breakers, live."""
    from outlast.store.connect import connect

    url = redis_url(redis)

    async def go() -> None:
        async with connect(url) as client:
            if once or not console.is_terminal:
                console.print(render(await snapshot(client)))
                return
            with Live(render(await snapshot(client)), console=console, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)  # a refresh period, not synchronisation
                    live.update(render(await snapshot(client)), refresh=True)

    run_async(go())
