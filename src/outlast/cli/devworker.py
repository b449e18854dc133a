"""``outlast dev-worker``: the worker process ``outlast dev`` starts (hidden from ``--help``).

It serves every workflow of every app given, and marks them all upgrade-safe: a run is then not
pinned to the code version it started on, so when a reload's new workers replace the old ones,
the old ones' runs are handed over to the new code (which replays their recorded steps and fails
them with a NonDeterminismError naming the step if the code no longer matches).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import signal
import sys
from typing import Annotated, Any

import typer

from outlast.cli.main import app, console, run_async
from outlast.core.workflow import Registry, Workflow
from outlast.store.connect import connect
from outlast.worker.loader import load_app
from outlast.worker.worker import Worker

READY = "dev-worker ready"
STANDBY = "dev-worker standby"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def follow_parent(parent_pid: int) -> None:
    """Get SIGTERM (a drain) when ``outlast dev`` ends, even by SIGKILL, which it cannot pass on:
    left running, its workers would keep serving a stack nobody watches any more."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it ended before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def load_apps(targets: list[str]) -> Registry:
    """One registry of every workflow the targets define (two with one name: ConfigError)."""
    workflows: list[Workflow[Any, Any]] = []
    for target in targets:
        workflows.extend(load_app(target))
    return Registry(workflows)


@app.command("dev-worker", hidden=True)
def dev_worker(
    targets: Annotated[list[str], typer.Argument(help="Apps: files, folders or module paths.")],
    redis: Annotated[str, typer.Option("--redis", help="Redis URL.")],
    version: Annotated[str | None, typer.Option(help="The code version these workers serve.")] = None,
    standby: Annotated[
        bool, typer.Option(help="Import Outlast now; read the version from stdin, then load the apps.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1)] = 10,
    drain_timeout: Annotated[float, typer.Option(min=0)] = 5.0,
    heartbeat: Annotated[float, typer.Option(min=0.01)] = 1.0,
    lease_timeout: Annotated[float, typer.Option(min=0.05)] = 4.0,
    parent_pid: Annotated[int | None, typer.Option(help="Stop (draining) when this process ends.")] = None,
) -> None:
    """A worker of ``outlast dev``: all workflows upgrade-safe, prints a ready line.

    ``--standby``: started ahead of a reload with Outlast and the LLM SDKs imported, it waits for
    the new version on stdin and only then imports the (changed) app: a reload skips the Python
    start-up. EOF on stdin (``outlast dev`` went away) ends it.
    """
    if parent_pid is not None:
        follow_parent(parent_pid)
    if standby:
        for module in (
            "outlast.llm.openai_provider",
            "outlast.llm.anthropic_provider",
            "openai",
            "anthropic",
        ):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        print(STANDBY, flush=True)
        version = sys.stdin.readline().strip()
        if not version:
            return
    if not version:
        raise typer.BadParameter("give --version or --standby")
    registry = load_apps(targets)
    for wf in registry:
        wf.upgrade_safe = True
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("outlast").setLevel(logging.INFO)

    async def serve() -> None:
        async with connect(redis) as client:
            w = Worker(
                registry, client, concurrency=concurrency, version=version, heartbeat=heartbeat,
                lease_timeout=lease_timeout, drain_timeout=drain_timeout,
            )  # fmt: skip
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, w.stop)
            running = asyncio.create_task(w.run())
            ready = asyncio.create_task(w.ready.wait())
            await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if w.ready.is_set():
                names = ",".join(wf.name for wf in registry)
                console.print(f"{READY} {w.id} {w.version} {names}", markup=False)
            await running

    run_async(serve())
