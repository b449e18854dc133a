"""Commands on the store directly: ``events``, ``server``."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from outlast.cli.main import RedisOption, app, console, err_console, fail, redis_url, run_async
from outlast.errors import OutlastError, RunNotFound
from outlast.events import TERMINAL_STATUSES


@app.command()
def events(
    run_id: str,
    after: Annotated[int, typer.Option(help="Print events with seq greater than this.")] = 0,
    follow: Annotated[bool, typer.Option(help="Keep tailing until the run ends.")] = True,
    pretty: Annotated[bool, typer.Option(help="Render the run live, as `outlast run` does.")] = False,
    redis: RedisOption = None,
) -> None:
    """Print a run's events as JSON lines (history, then live)."""
    from outlast.store.connect import connect
    from outlast.store.redis import RedisStore

    if after < 0:
        fail("--after must be 0 or more", 2)
    url = redis_url(redis)

    async def tail() -> None:
        async with connect(url) as client:
            store = RedisStore(client)
            try:
                record = await store.get_run(run_id)
            except RunNotFound:
                fail(f"no run {run_id!r} in {url} (`outlast runs` lists the runs there)")
            if after > record.last_seq:
                fail(f"--after {after} is past the end of run {run_id} (its last seq is {record.last_seq})")
            if record.status in TERMINAL_STATUSES and after == record.last_seq and not pretty:
                return  # nothing after the end: no need to wait for events that cannot come
            if pretty:
                from outlast.cli.live import Follower

                follower = Follower(run_id, pretty=True, workflow=record.workflow)
                await follower.consume(store.read_events(run_id, 0, follow=follow, known=record))
                follower.finish()
                return
            async for event in store.read_events(run_id, after, follow=follow, known=record):
                sys.stdout.write(json.dumps(event.model_dump()) + "\n")
                sys.stdout.flush()

    run_async(tail())


@app.command()
def server(
    data_dir: Annotated[Path, typer.Option(help="Data directory (AOF).")] = Path(".outlast/data"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = a free one).")] = 0,
) -> None:
    """Run the embedded Valkey in the foreground and print its URL (Ctrl-C stops it).

    If Valkey dies, this exits 1 with a message, releasing the data dir for the next one.
    """
    from outlast.store.embedded import EmbeddedServer

    embedded = EmbeddedServer(data_dir, port=port or None)
    try:
        embedded.start()
    except OutlastError as exc:
        fail(str(exc))
    process = embedded.process
    console.print(f"export OUTLAST_REDIS_URL={embedded.url}")
    stop = threading.Event()
    died = threading.Event()

    def watch() -> None:
        if process is not None:
            process.wait()
        died.set()
        stop.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=watch, name="valkey-watch", daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        code = process.returncode if process is not None else None
        embedded.stop()  # reaps it (if it still runs) and releases the data-dir lock
    if died.is_set() and code is not None:
        err_console.print(
            f"[red]error:[/red] valkey-server (pid {process.pid if process else '?'}) exited with code "
            f"{code}; see {data_dir / 'server.log'}. Run `outlast server` again: its data is kept"
        )
        raise typer.Exit(1)
