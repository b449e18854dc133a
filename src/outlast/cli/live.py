"""The live terminal over HTTP: ``run``, ``attach``, ``runs``, ``trace``.

On a terminal a run is drawn live (:class:`~outlast.cli.render.RunView`); otherwise each event is
one plain line, so output can be piped, logged and tested. Ctrl-C detaches (the run goes on) and
prints the ``attach`` command that continues exactly after the last event shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.live import Live
from rich.table import Table

from outlast.cli.main import ApiOption, api_url, app, console, err_console, fail, note, run_async
from outlast.cli.render import RunView, error_text, plain_line
from outlast.cli.trace_view import render_trace
from outlast.client import AsyncClient, ClientError
from outlast.events import Event

_EXAMPLE = """--input '{"topic": "durable AI"}'"""


def parse_input(text: str | None) -> dict[str, Any]:
    """``--input``: a JSON object, or ``@file.json`` (``@-``: stdin). Mistakes exit 2 saying where."""
    if text is None:
        return {}
    where, raw = "--input", text
    if text.startswith("@"):
        name = text[1:]
        where = "stdin" if name == "-" else name
        try:
            raw = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}", 2)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        fail(f"{where} is not valid JSON ({exc}); quote it for the shell, e.g. {_EXAMPLE}", 2)
    if not isinstance(value, dict):
        fail(f"{where} must be a JSON object of the workflow's arguments, e.g. {_EXAMPLE}", 2)
    return value


def api_failure(exc: ClientError, api: str) -> NoReturn:
    if exc.status == 0:
        reason = exc.message.split("(", 1)[-1].split(")", 1)[0].strip("'\"") or exc.message
        fail(
            f"cannot reach the API at {api} ({reason}); start `outlast dev` in this folder, "
            "or pass --api URL / set OUTLAST_API_URL"
        )
    fail(f"{exc.message} ({exc.status} {exc.code})")


class Follower:
    """Shows a run's events, live (``pretty``) or one plain line each; remembers the last seq."""

    def __init__(self, run_id: str, *, pretty: bool, workflow: str | None = None, after: int = 0) -> None:
        self.run_id = run_id
        self.pretty = pretty
        self.last_seq = after
        self.view = RunView(run_id, workflow)
        self.end: Event | None = None
        self._live: Live | None = None

    async def consume(self, events: AsyncIterator[Event]) -> Event | None:
        if self.pretty:
            self._live = Live(self.view.render(), console=console, refresh_per_second=8, transient=False)
            self._live.start()
        try:
            async for event in events:
                self.last_seq = max(self.last_seq, event.seq)
                if self.pretty:
                    self.view.apply(event)
                    if self._live is not None:
                        self._live.update(self.view.render())
                else:
                    console.print(plain_line(event), markup=False, highlight=False)
                if event.terminal:
                    self.end = event
        finally:
            if self._live is not None:
                self._live.update(self.view.render())
                self._live.stop()
                self._live = None
        return self.end

    def detached(self) -> None:
        err_console.print(
            f"detached from run {self.run_id} (it goes on); continue with: "
            f"outlast attach {self.run_id} --after {self.last_seq}",
            markup=False,
        )

    def finish(self) -> None:
        """Exit 1 (with the error in one line) unless the run completed."""
        end = self.end
        if end is None or end.type == "run.completed":
            return
        what = error_text(end.data.get("error")) if end.type == "run.failed" else "cancelled"
        fail(f"run {self.run_id} {end.type.removeprefix('run.')}: {what}")


async def _follow(client: AsyncClient, run_id: str, after: int, workflow: str | None) -> None:
    pretty = console.is_terminal
    follower = Follower(run_id, pretty=pretty, workflow=workflow, after=after)
    try:
        # The live view rebuilds the tree from the first event; plain lines continue after `after`.
        await follower.consume(client.events(run_id, 0 if pretty else after))
    except asyncio.CancelledError:
        follower.detached()
        raise
    follower.finish()


@asynccontextmanager
async def session(api: str) -> AsyncIterator[AsyncClient]:
    """A client of ``api`` (key: ``$OUTLAST_API_KEY``); its errors end the command in one line."""
    from outlast.cli.discover import ENV_API_KEY

    async with AsyncClient(api, os.environ.get(ENV_API_KEY) or None, reconnect_for=10.0) as client:
        try:
            yield client
        except ClientError as exc:
            api_failure(exc, api)


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="The workflow to start.")],
    input_: Annotated[
        str | None, typer.Option("--input", help="Arguments as a JSON object, or @file.json (@- = stdin).")
    ] = None,
    detach: Annotated[bool, typer.Option(help="Print the run id and return at once.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Start at most one run for this key.")] = None,
    api: ApiOption = None,
) -> None:
    """Start a run over HTTP and show it live until it ends (Ctrl-C detaches; the run goes on)."""
    arguments = parse_input(input_)
    base = api_url(api)

    async def go() -> None:
        async with session(base) as client:
            try:
                started = await client.start(workflow, arguments, idempotency_key)
            except ClientError as exc:
                if exc.code == "workflow_not_found":
                    await _unknown_workflow(client, workflow)
                raise
            if detach:
                console.print(started.run_id, markup=False)
                note(f"follow it with: outlast attach {started.run_id}")
                return
            await _follow(client, started.run_id, 0, workflow)

    run_async(go())


async def _unknown_workflow(client: AsyncClient, name: str) -> NoReturn:
    try:
        listing = await client.workflows()
        known = sorted({str(w.get("name")) for w in listing.get("workflows", [])})
    except ClientError:
        known = []
    fail(f"no workflow {name!r}; known: {', '.join(known) if known else 'none (are workers running?)'}")


@app.command()
def attach(
    run_id: str,
    after: Annotated[int, typer.Option(min=0, help="Continue after this seq (plain output).")] = 0,
    api: ApiOption = None,
) -> None:
    """Show a run live from its snapshot, continuing until it ends (Ctrl-C detaches again)."""
    base = api_url(api)

    async def go() -> None:
        async with session(base) as client:
            snapshot = await client.get(run_id)
            if after > snapshot.last_seq:
                last = snapshot.last_seq
                fail(f"--after {after} is past the end of run {run_id} (its last seq is {last})")
            await _follow(client, run_id, after, snapshot.workflow)

    run_async(go())


def _age(ts: float | None) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


@app.command()
def runs(
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status (e.g. failed).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    api: ApiOption = None,
) -> None:
    """List runs, newest first."""
    base = api_url(api)

    async def go() -> None:
        async with session(base) as client:
            page = await client.list_runs(workflow, status, limit)
        if not page.runs:
            console.print("no runs" + (" match" if workflow or status else " yet"))
            return
        table = Table("run", "workflow", "status", "version", "created", "took", box=None)
        for r in page.runs:
            took = f"{r.finished_at - r.created_at:.2f}s" if r.finished_at and r.created_at else "-"
            table.add_row(r.run_id, r.workflow or "-", r.status, r.version or "-", _age(r.created_at), took)
        console.print(table)

    run_async(go())


@app.command()
def trace(run_id: str, api: ApiOption = None) -> None:
    """A run's steps as a tree: durations, tries, errors, LLM tokens and cost, masked arguments."""
    base = api_url(api)

    async def go() -> None:
        async with session(base) as client:
            snapshot = await client.get(run_id)
            spans = await client.trace(run_id)
        console.print(render_trace(snapshot, spans))

    run_async(go())
