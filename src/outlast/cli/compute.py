"""CLI commands of the compute plane: worker, workers, cancel, input, fairness, deploy."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outlast.cli.discover import connect
from outlast.cli.main import RedisOption, app, console, err_console, fail, run_async
from outlast.control import Dispatcher
from outlast.observe import observer_from_env
from outlast.observe.logs import configure_logging
from outlast.worker.jobs import redis_url_of
from outlast.worker.launcher import SubprocessLauncher
from outlast.worker.loader import load_app
from outlast.worker.worker import Worker

deploy_app = typer.Typer(help="Blue-green deployment: which version new runs go to.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


@app.command()
def worker(
    target: Annotated[
        str, typer.Argument(help="Module path (pkg.flows) or file (flows.py) defining workflows.")
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Runs executed at once.")] = 10,
    version: Annotated[
        str | None, typer.Option(help="Deployment version (default $OUTLAST_VERSION or 'dev').")
    ] = None,
    heartbeat: Annotated[float, typer.Option(min=0.01, help="Lease renewal interval, seconds.")] = 1.0,
    lease_timeout: Annotated[
        float, typer.Option(min=0.05, help="A lease not renewed for this long expires.")
    ] = 4.0,
    drain_timeout: Annotated[float, typer.Option(min=0, help="On SIGTERM, wait this long for runs.")] = 30.0,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before a run fails.")] = 5,
    burst: Annotated[bool, typer.Option(help="Exit once nothing is queued or running.")] = False,
    launcher: Annotated[
        str, typer.Option(help="'inprocess' runs here; 'subprocess' runs each in `outlast execute`.")
    ] = "inprocess",
    redis: RedisOption = None,
) -> None:
    """Run workflows: take runs from the queue, heartbeat, take over dead workers' runs."""
    if launcher not in ("inprocess", "subprocess"):
        err_console.print(
            f"[red]error:[/red] --launcher must be 'inprocess' or 'subprocess', not {launcher!r}"
        )
        raise typer.Exit(2)
    registry = load_app(target)
    _log_runs()

    async def serve() -> None:
        async with connect(redis) as client:
            spawner = None
            if launcher == "subprocess":
                spawner = SubprocessLauncher(
                    target, redis_url_of(client), heartbeat=heartbeat, lease_timeout=lease_timeout
                )
            w = Worker(
                registry, client, concurrency=concurrency, version=version, heartbeat=heartbeat,
                lease_timeout=lease_timeout, drain_timeout=drain_timeout, max_attempts=max_attempts,
                launcher=spawner, observer=observer_from_env(client),
            )  # fmt: skip
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, w.stop)
            running = asyncio.create_task(w.run(burst=burst))
            ready = asyncio.create_task(w.ready.wait())
            await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if w.ready.is_set():
                # Everything loaded so far (the app, its libraries) lives as long as the worker:
                # out of the cyclic GC, so full collections do not re-scan it under load.
                gc.collect()
                gc.freeze()
                names = ", ".join(wf.name for wf in registry)
                wait = w.store.commit_wait
                durable = f", commit wait {wait}" if wait.enabled else ""
                console.print(
                    f"worker {w.id} version {w.version}: {names} (concurrency {concurrency}{durable})"
                )
            await running
            console.print(f"worker {w.id} stopped after {w.started_runs} runs")

    run_async(serve())


def _log_runs() -> None:
    """JSON lines unless stderr is a terminal (``OUTLAST_LOG_FORMAT``); Outlast's own lines (one per
    run end and takeover) and the app's at INFO, but not the HTTP clients' per-request INFO chatter
    (httpx logs every request an LLM call makes)."""
    configure_logging()
    for chatty in ("httpx", "httpcore", "openai", "anthropic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@app.command()
def execute(
    run_id: str,
    target: Annotated[str, typer.Argument(help="Module path or file defining the run's workflow.")],
    heartbeat: Annotated[float, typer.Option(min=0.01, help="Lease renewal interval, seconds.")] = 1.0,
    lease_timeout: Annotated[
        float, typer.Option(min=0.05, help="A lease not renewed for this long expires.")
    ] = 4.0,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before a run fails.")] = 5,
    redis: RedisOption = None,
) -> None:
    """Execute one run in this process, given only its id (what launchers start)."""
    registry = load_app(target)
    _log_runs()  # (a launched execution logs its takeover and end as an in-process worker does)

    async def go() -> None:
        async with connect(redis) as client:
            w = Worker(
                registry, client, heartbeat=heartbeat, lease_timeout=lease_timeout,
                max_attempts=max_attempts, observer=observer_from_env(client),
            )  # fmt: skip
            outcome = await w.execute_one(run_id)
            if outcome == "gone":
                fail(f"no run {run_id!r} in this store: nothing to execute")
            console.print(f"run {run_id}: {outcome}")

    run_async(go())


@app.command()
def workers(redis: RedisOption = None) -> None:
    """List live workers."""

    async def show() -> None:
        async with connect(redis) as client:
            rows = await Dispatcher(client).workers()
        waits = any(w.get("commit_wait") for w in rows)  # a column only where someone waits
        table = Table("id", "version", "host", "pid", "running", "last heartbeat", *(["commit wait"] * waits))
        for w in rows:
            age = w["heartbeat_age"]
            state = " (draining)" if w.get("draining") else ""
            running = str(len(w["running"]))
            row = [w["id"], w["version"] + state, w["host"], str(w["pid"]), running, f"{age:.1f}s ago"]
            if waits:
                short = int(w.get("commit_wait_shortfalls") or 0)
                row.append(str(w.get("commit_wait") or "off") + (f" ({short:,} fell short)" if short else ""))
            table.add_row(*row)
        console.print(table if rows else "no live workers")

    run_async(show())


@app.command()
def cancel(run_id: str, redis: RedisOption = None) -> None:
    """Cancel a run (queued runs end at once; running ones within a heartbeat)."""

    async def go() -> None:
        async with connect(redis) as client:
            result = await Dispatcher(client).cancel(run_id)
        if result.already:
            console.print(f"run {run_id} already ended ({result.status}); nothing to cancel")
        else:
            console.print(f"run {run_id}: {result.status}")

    run_async(go())


@app.command()
def fairness(
    key: Annotated[str, typer.Argument(help="The fairness key (a tenant's runs use the tenant's name).")],
    max_concurrency: Annotated[
        int | None, typer.Option(help="Most runs of the key in flight across the fleet (0: no cap).")
    ] = None,
    weight: Annotated[
        int | None, typer.Option(help="Runs per round-robin turn (default 1; 0: back to 1).")
    ] = None,
    redis: RedisOption = None,
) -> None:
    """Set a fairness key's cap and weight, for every version (docs/compute.md, fair queues)."""
    if max_concurrency is None and weight is None:
        fail("give --max-concurrency and/or --weight")

    async def go() -> None:
        async with connect(redis) as client:
            await Dispatcher(client).set_fairness(key, max_concurrency=max_concurrency, weight=weight)
        console.print(f"fairness key {escape(key)}: max_concurrency={max_concurrency}, weight={weight}")

    run_async(go())


_EXAMPLE = """--json '{"ok": true}'"""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _input_value(value_json: str | None, file: Path | None) -> Any:
    """The value of ``--json`` or ``--file`` (``-`` reads stdin); a usage error (exit 2) if unusable."""
    if (value_json is None) == (file is None):
        err_console.print(
            "[red]error:[/red] give the value as --json JSON or --file PATH (exactly one of them), "
            f"e.g. {escape(_EXAMPLE)}"
        )
        raise typer.Exit(2)
    where, text = "--json", value_json or ""
    if file is not None:
        where = "stdin" if str(file) == "-" else str(file)
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            err_console.print(f"[red]error:[/red] cannot read {escape(where)}: {escape(str(exc))}")
            raise typer.Exit(2) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        err_console.print(
            f"[red]error:[/red] {escape(where)} is not valid JSON ({escape(str(exc))}); "
            f"quote it for the shell, e.g. {escape(_EXAMPLE)}"
        )
        raise typer.Exit(2) from None


@app.command("input")
def input_(
    run_id: str,
    key: Annotated[str, typer.Argument(help="The key the run waits for (wait_for_input's key).")],
    value_json: Annotated[
        str | None, typer.Option("--json", help="The value as JSON (any JSON value).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the JSON value from this file ('-': stdin).")
    ] = None,
    redis: RedisOption = None,
) -> None:
    """Supply the input a waiting run asks for (checked against the schema it asks with)."""
    value = _input_value(value_json, file)

    async def go() -> None:
        async with connect(redis) as client:
            outcome = await Dispatcher(client).supply_input(run_id, key, value)
        console.print(f"input {key!r} delivered to run {run_id} ({outcome})")

    run_async(go())


@deploy_app.command("promote")
def promote(
    version: str,
    force: Annotated[
        bool, typer.Option(help="Promote a version no worker has registered yet (about to be deployed).")
    ] = False,
    redis: RedisOption = None,
) -> None:
    """Send new runs to VERSION; runs already started stay on their version."""

    async def go() -> None:
        async with connect(redis) as client:
            previous = await Dispatcher(client).promote(version, force=force)
        console.print(f"active version: {version} (was {previous or 'none'})")

    run_async(go())


@deploy_app.command("rollback")
def rollback(redis: RedisOption = None) -> None:
    """Make the previously active version active again."""

    async def go() -> None:
        async with connect(redis) as client:
            version = await Dispatcher(client).rollback()
        console.print(f"active version: {version}")

    run_async(go())


@deploy_app.command("status")
def status(
    redis: RedisOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Active version, workers and in-flight runs per version ("drained" when none)."""

    async def go() -> None:
        async with connect(redis) as client:
            report = await Dispatcher(client).deploy_status()
        if as_json:
            console.print_json(json.dumps(report))
            return
        console.print(f"active version: {report['active'] or 'none'}")
        table = Table("version", "workers", "in-flight runs", "state")
        for row in report["versions"]:
            table.add_row(row["version"], str(row["workers"]), str(row["in_flight"]), row["state"])
        console.print(table)

    run_async(go())
