"""``outlast demo`` (``make demo``): the whole system in a minute.

Starts ``outlast dev`` (embedded Valkey, the API, two worker processes, the LLM simulator) in a
temporary folder, starts the blog example (``examples/blog`` when it is there, else
:mod:`outlast.demo`) over HTTP and shows it live; once a step has completed and another is
streaming, SIGKILLs the worker running the run; the other worker takes the run over when the lease
expires, replaying completed steps from their checkpoints. Prints the result, the run's console URL
and how often each step's body ran (``step.started`` events per step: a replayed step starts no
body), stops everything and exits 0 — or 1 if the run did not survive.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outlast import events as ev
from outlast.cli.main import app, console, err_console, fail, run_async
from outlast.errors import OutlastError

BLOG = Path("examples") / "blog"


def _choice(
    app_path: str | None, workflow: str | None, input_: str | None
) -> tuple[str, str, dict[str, Any]]:
    arguments: dict[str, Any] = json.loads(input_) if input_ else {"topic": "durable AI"}
    if app_path:
        target = str(Path(app_path).resolve()) if Path(app_path).exists() else app_path
        return target, workflow or "blog", arguments
    if BLOG.is_dir():
        why = _unusable(str(BLOG.resolve()), workflow or "blog", arguments)
        if why is None:
            return str(BLOG.resolve()), workflow or "blog", arguments
        err_console.print(f"[yellow]{escape(why)}: running the packaged demo app instead[/yellow]")
    return "outlast.demo", workflow or "blog-demo", arguments


def _unusable(target: str, name: str, arguments: dict[str, Any]) -> str | None:
    """Why ``target``'s workflow ``name`` cannot run with ``arguments`` (None: it can)."""
    from outlast.worker.loader import load_app

    try:
        registry = load_app(target)
        flow = registry.get(name)
    except OutlastError as exc:
        return str(exc)
    missing = set(flow.input_schema().get("required", [])) - set(arguments)
    return f"{target}: {name} needs {', '.join(sorted(missing))}" if missing else None


@app.command()
def demo(
    app_path: Annotated[
        str | None, typer.Option("--app", help="App to serve (default: examples/blog).")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow to run (default: blog).")] = None,
    input_: Annotated[str | None, typer.Option("--input", help="Its input as a JSON object.")] = None,
) -> None:
    """The whole system: dev stack, a run shown live, its worker SIGKILLed, the takeover, the counts."""
    target, name, arguments = _choice(app_path, workflow, input_)
    with tempfile.TemporaryDirectory(prefix="outlast-demo-") as tmp:
        code = run_async(_demo(Path(tmp), target, name, arguments))
    if code:
        raise typer.Exit(code)


async def _relay(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        into.append(line)
        if line and not line.startswith("using "):
            err_console.print(f"[dim]dev │ {escape(line)}[/dim]", highlight=False)


async def _demo(folder: Path, target: str, name: str, arguments: dict[str, Any]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    console.print(f"[bold]outlast demo[/bold]: starting `outlast dev {target} --workers 2` in {folder}")
    dev = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outlast.cli", "dev", target, "--port", "0", "--workers", "2", "--no-reload",
        cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out: list[str] = []
    relays = [asyncio.create_task(_relay(s, out)) for s in (dev.stdout, dev.stderr) if s is not None]
    try:
        state = await _wait_ready(folder, dev, out)
        return await _show(state, name, arguments)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGINT)
            await dev.wait()
        await asyncio.gather(*relays, return_exceptions=True)


async def _wait_ready(folder: Path, dev: asyncio.subprocess.Process, out: list[str]) -> dict[str, Any]:
    async with asyncio.timeout(120):
        while not any("Ctrl-C stops everything" in line for line in out):
            if dev.returncode is not None:
                raise OutlastError(f"outlast dev exited with code {dev.returncode}: {out[-1] if out else ''}")
            await asyncio.sleep(0.05)  # waiting for a child's banner line, relayed by another task
    state: dict[str, Any] = json.loads((folder / ".outlast" / "dev.json").read_text())
    return state


async def _show(state: dict[str, Any], name: str, arguments: dict[str, Any]) -> int:
    from outlast.cli.live import Follower
    from outlast.client import AsyncClient
    from outlast.control import Dispatcher
    from outlast.store.connect import connect

    api = str(state["api_url"])
    async with AsyncClient(api) as client, connect(str(state["redis_url"])) as redis:
        run = await client.start(name, arguments)
        console.print(f"[bold]run {run.run_id}[/bold] of {name} started over HTTP ({api})")
        seen: list[ev.Event] = []
        killed: dict[str, Any] = {}

        async def events() -> AsyncIterator[ev.Event]:
            async for event in client.events(run.run_id):
                seen.append(event)
                yield event
                done = any(e.type == ev.STEP_COMPLETED for e in seen)
                if not killed and done and event.type == ev.OUTPUT and event.attempt == 1:
                    killed.update(await _kill_runner(Dispatcher(redis), seen))

        follower = Follower(run.run_id, pretty=console.is_terminal, workflow=name)
        end = await follower.consume(events())
        final = await client.get(run.run_id)
    return _report(api, final, seen, killed, end)


async def _kill_runner(dispatcher: Any, seen: list[ev.Event]) -> dict[str, Any]:
    started = [e for e in seen if e.type == ev.RUN_STARTED]
    worker_id = started[-1].data.get("worker")
    worker = next((w for w in await dispatcher.workers() if w["id"] == worker_id), None)
    if worker is None:
        fail(f"cannot find worker {worker_id} to kill")
    os.kill(int(worker["pid"]), signal.SIGKILL)
    console.print(
        f"[red bold]── SIGKILLed worker {worker_id} (pid {worker['pid']}) mid-step, after seq "
        f"{seen[-1].seq}; its lease expires in a few seconds, then the other worker takes the run over"
        " ──[/red bold]"
    )
    return {"worker": worker_id, "pid": worker["pid"], "seq": seen[-1].seq}


def _report(api: str, final: Any, seen: list[ev.Event], killed: dict[str, Any], end: ev.Event | None) -> int:
    starts = [e for e in seen if e.type == ev.RUN_STARTED]
    takeover = next((e for e in starts if e.attempt > 1), None)
    if takeover is not None:
        console.print(
            f"[green]attempt {takeover.attempt} on worker {takeover.data.get('worker')}[/green] resumed "
            f"from {takeover.data.get('checkpoints', 0)} checkpoints"
        )
    runs = Counter(e.step for e in seen if e.type == ev.STEP_STARTED and e.step)
    table = Table("step", "body ran", "note", box=None, title="per-step body runs")
    before_kill = {
        e.step for e in seen if e.type == ev.STEP_COMPLETED and e.step and killed and e.seq <= killed["seq"]
    }
    for step, count in runs.items():
        note = "completed before the kill: replayed, not re-run" if step in before_kill else ""
        if count > 1:
            note = "interrupted by the kill: ran again"
        table.add_row(step, f"{count}x", note)
    console.print(table)
    console.print(f"console: {api}/#/runs/{final.run_id}")
    rerun = [step for step in before_kill if step and runs[step] > 1]
    if end is None or end.type != ev.RUN_COMPLETED or takeover is None or rerun or not killed:
        err_console.print(
            f"[red]error:[/red] the demo did not go as designed (end {end.type if end else None}, "
            f"takeover {takeover is not None}, re-run completed steps {rerun})"
        )
        return 1
    console.print("[bold green]the run survived its worker's death; no completed step ran twice[/bold green]")
    return 0
