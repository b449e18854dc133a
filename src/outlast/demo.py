"""``outlast demo``: a blog-writer workflow that survives its process being killed.

1. starts a private Valkey (AOF on) in a temporary data dir;
2. runs the workflow in a child process while this process prints its stream live;
3. SIGKILLs the child once the outline is done and sections are being written;
4. resumes the run here as attempt 2: completed steps return their stored results (their
   bodies do not run again), the stream goes on with the same seq numbering;
5. prints how often each step's body ran, and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from rich.console import Console

import outlast
from outlast import component, workflow
from outlast import events as ev
from outlast.store.client import redis_from_url
from outlast.store.connect import connect

_ctx: dict[str, aioredis.Redis] = {}


async def _ran(name: str) -> None:
    """Count a body execution in Redis, so the demo can show what re-ran after the crash."""
    await _ctx["redis"].incr(f"demo:ran:{name}")


@component
async def research(topic: str) -> list[str]:
    await _ran("research")
    await asyncio.sleep(0.3)
    return [f"{topic} fails in production when a process dies", f"checkpoints let {topic} resume"]


@component
async def make_outline(topic: str, notes: list[str]) -> list[str]:
    await _ran("make_outline")
    await asyncio.sleep(0.3)
    return ["Why runs die", "Checkpoints", "Streams that resume"]


@component
async def write_section(heading: str, notes: list[str]) -> AsyncIterator[str]:
    await _ran(f"write_section:{heading}")
    words = f"{heading}: a durable step is written once and replayed from its checkpoint.".split()
    for word in words:
        await asyncio.sleep(0.06)
        yield word + " "


@workflow(name="blog-demo")
async def blog(topic: str) -> str:
    outlast.status("researching")
    notes = await research(topic)
    outline = await make_outline(topic, notes)
    outlast.status("writing")
    parts = await outlast.gather(*(write_section(h, notes) for h in outline), limit=2)
    outlast.progress(done=len(parts), total=len(outline), label="sections")
    return "\n".join(parts)


async def _child(url: str, run_id: str) -> None:
    client = redis_from_url(url)
    _ctx["redis"] = client
    try:
        await outlast.Runner(outlast.RedisStore(client), worker_id=f"demo-child-{os.getpid()}").execute(
            blog, run_id
        )
    finally:
        await client.aclose()


def _show(console: Console, event: ev.Event) -> None:
    tag = f"[dim]#{event.seq:<3} a{event.attempt}[/dim]"
    if event.type == ev.OUTPUT:
        console.print(f"{tag} [cyan]{event.step}[/cyan] {event.data.get('text', '')}")
    elif event.type in (ev.STEP_STARTED, ev.STEP_COMPLETED):
        verb = "started  " if event.type == ev.STEP_STARTED else "completed"
        console.print(f"{tag} step {verb} [bold]{event.step}[/bold]")
    elif event.type == ev.STATUS:
        console.print(f"{tag} [yellow]status[/yellow] {event.data['message']}")
    elif event.type == ev.RUN_STARTED:
        console.print(f"{tag} [green]run.started[/green] attempt {event.attempt}")
    else:
        console.print(f"{tag} {event.type}")


async def run_demo(console: Console, data_dir: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-demo-") as tmp:
        async with connect(None, data_dir=data_dir or Path(tmp)) as client:
            _ctx["redis"] = client
            store = outlast.RedisStore(client)
            runner = outlast.Runner(store, worker_id="demo-main")
            run_id = await runner.start(blog, {"topic": "long-running AI workflows"})
            kwargs = client.connection_pool.connection_kwargs
            server_url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
            console.print(f"[bold]run {run_id}[/bold]: starting a worker process")
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "outlast.demo", server_url, run_id
            )
            last = 0
            async for event in store.read_events(run_id):
                _show(console, event)
                last = event.seq
                if event.type == ev.OUTPUT and event.step and event.step.startswith("write_section"):
                    child.send_signal(signal.SIGKILL)
                    await child.wait()
                    console.print(
                        f"[red bold]-- killed the worker process (pid {child.pid}) mid-section --[/red bold]"
                    )
                    break
            console.print("[bold]resuming in this process as a new attempt[/bold]")
            resumed = asyncio.create_task(runner.execute(blog, run_id))
            async for event in store.read_events(run_id, after=last):
                _show(console, event)
            outcome = await resumed
            console.print(
                f"\n[bold]result ({outcome.status}, attempt {outcome.attempt}):[/bold]\n{outcome.result}\n"
            )
            for key in sorted(await client.keys("demo:ran:*")):
                name = key.decode().removeprefix("demo:ran:")
                console.print(f"  {name:<40} body ran {int(await client.get(key) or 0)}x")
            console.print("research and make_outline ran once: attempt 2 replayed them from checkpoints.")
            if outcome.status != "completed":
                raise outlast.RunFailed(run_id, outcome.status, outcome.error)


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2]))
