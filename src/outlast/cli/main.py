"""``outlast``: the command line. Errors are printed as one line saying what to do, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from outlast.errors import OutlastError

T = TypeVar("T")

app = typer.Typer(
    name="outlast",
    help="Durable, streaming workflows for long-running AI apps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

RedisOption = Annotated[
    str | None, typer.Option("--redis", help="Redis URL (default: $OUTLAST_REDIS_URL, else embedded Valkey).")
]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (a worker or API process spends much of its CPU in the event
    loop); ``OUTLAST_LOOP=asyncio`` keeps the standard loop."""
    if os.environ.get("OUTLAST_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; OutlastErrors become a one-line message and exit code 1."""
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(coro)
    except OutlastError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo's Valkey keeps its data.")] = None,
) -> None:
    """Run a workflow, kill its process mid-way, and resume it from its checkpoints."""
    from outlast.demo import run_demo

    run_async(run_demo(console, data_dir))


@app.command()
def events(
    run_id: str,
    after: Annotated[int, typer.Option(help="Print events with seq greater than this.")] = 0,
    follow: Annotated[bool, typer.Option(help="Keep tailing until the run ends.")] = True,
    redis: RedisOption = None,
) -> None:
    """Print a run's events as JSON lines (history, then live)."""
    from outlast.store.connect import connect
    from outlast.store.redis import RedisStore

    if after < 0:
        err_console.print("[red]error:[/red] --after must be 0 or more")
        raise typer.Exit(2)

    async def tail() -> None:
        async with connect(redis) as client:
            async for event in RedisStore(client).read_events(run_id, after, follow=follow):
                sys.stdout.write(json.dumps(event.model_dump()) + "\n")
                sys.stdout.flush()

    run_async(tail())


@app.command()
def server(
    data_dir: Annotated[Path, typer.Option(help="Data directory (AOF).")] = Path(".outlast/data"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = a free one).")] = 0,
) -> None:
    """Run the embedded Valkey in the foreground and print its URL (Ctrl-C stops it)."""
    import signal
    import threading

    from outlast.store.embedded import EmbeddedServer

    embedded = EmbeddedServer(data_dir, port=port or None)
    try:
        embedded.start()
    except OutlastError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"export OUTLAST_REDIS_URL={embedded.url}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


def main() -> None:
    from outlast.cli import api, compute, llm  # noqa: F401  (compute and llm register on `app`)

    api.register(app)
    try:
        app()
    except OutlastError as exc:  # raised outside a command's event loop (e.g. loading the app)
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("OUTLAST_DEBUG"):
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} "
            "(set OUTLAST_DEBUG=1 for the traceback, and please report it)"
        )
        sys.exit(2)
