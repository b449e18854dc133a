"""``outlast dev``: the whole stack for one folder, in one command.

The embedded Valkey (data in ``.outlast/data``: history survives a restart), the API (and the
console at ``/``) served in this process, N worker processes of the app, and — when neither
``OPENAI_API_KEY`` nor ``ANTHROPIC_API_KEY`` is set — the LLM simulator, wired in as the default
provider: the workers get ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` pointing at it (the official
SDKs read them, so ``OpenAIProvider("primary", "gpt-4o-mini")`` needs no argument changed) and a
placeholder key. A code change starts new workers under a new version, promotes it, and drains the
old ones (see :mod:`outlast.cli.devsup`). Ctrl-C stops everything, by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from outlast.cli.discover import DEV_FILE, ENV_API, STATE_DIR
from outlast.cli.main import app, err_console, fail, make_console
from outlast.errors import OutlastError
from outlast.store.connect import ENV_URL
from outlast.store.embedded import DEFAULT_DATA_DIR, EmbeddedServer

SIM_KEY = "outlast-simulator"  # the simulator accepts any key; the SDKs insist on one
#: Model names the dev simulator answers to, so apps written for a real provider run unchanged.
SIM_MODELS = (
    "outlast-sim", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano", "gpt-5-mini", "gpt-5",
    "o4-mini", "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest",
    "claude-3-5-sonnet-latest", "claude-3-7-sonnet-latest",
)  # fmt: skip
ENV_SIM = "OUTLAST_LLM_SIMULATOR"


def bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now: a taken port is one line before any URL is printed."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"port {port} on {host} is taken ({exc.strerror}); stop what uses it or pass --port N")
    return sock


def watch_roots(targets: list[str]) -> list[Path]:
    """The folders whose Python files make up the app (a module path: its package's folder)."""
    roots: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            roots.append(path.resolve())
        elif path.is_file() or target.endswith(".py"):
            roots.append(path.resolve().parent)
        elif (module := Path.cwd().joinpath(*target.split("."))).is_dir():
            roots.append(module.resolve())  # a package under this folder, as the workers import it
        elif module.with_suffix(".py").is_file():
            roots.append(module.with_suffix(".py").resolve().parent)
        else:
            with contextlib.suppress(ImportError, ValueError):
                spec = importlib.util.find_spec(target)
                if spec is not None and spec.origin:
                    roots.append(Path(spec.origin).resolve().parent)
    unique = sorted(set(roots))
    return [r for r in unique if not any(o != r and o in r.parents for o in unique)]


def simulator() -> Any:
    """The LLM simulator (not started yet) on a free port, unless a provider key is set (then None)."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY"):
        return None
    from outlast.llm.simulator import SimulatorServer
    from outlast.store.embedded import free_port

    return SimulatorServer(models=list(SIM_MODELS), port=free_port())


def llm_env(sim: Any) -> dict[str, str]:
    """What the workers need to use the simulator as their default provider."""
    if sim is None:
        return {}
    return {
        "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": SIM_KEY,
        "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": SIM_KEY, ENV_SIM: sim.url,
    }  # fmt: skip


@app.command()
def dev(
    apps: Annotated[
        list[str] | None, typer.Argument(help="Files, folders or module paths defining workflows.")
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="API and console port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    data_dir: Annotated[Path, typer.Option(help="Where Valkey keeps its data.")] = DEFAULT_DATA_DIR,
    reload: Annotated[bool, typer.Option(help="Restart workers on code changes.")] = True,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="On reload, seconds old workers may finish runs before handing over.")
    ] = 5.0,
) -> None:
    """Run Valkey, the API, the console, N workers and the LLM simulator; reload on change."""
    started = time.monotonic()
    targets = apps or [t for t in ("app.py", "workflows.py", "flows.py") if Path(t).is_file()][:1]
    if not targets:
        fail("give the app to serve: outlast dev flows.py (a file, folder or module path with @workflow)", 2)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    embedded = EmbeddedServer(data_dir)
    try:
        embedded.start()
    except OutlastError as exc:
        sock.close()
        if "in use by" in str(exc):
            fail(f"another outlast dev or server already runs in this folder ({exc})")
        fail(str(exc))
    if embedded.stopped_orphan is not None:
        err_console.print(
            f"stopped the Valkey (pid {embedded.stopped_orphan}) a killed outlast dev had left running "
            f"on {data_dir}",
            markup=False,
        )
    from outlast.cli.main import run_async

    sim = None
    try:
        sim = simulator()
        serving = _serve(targets, sock, embedded, sim, host, port, workers, reload, drain_timeout, started)
        code = run_async(serving)
    finally:
        if sim is not None:
            sim.stop()
        embedded.stop()
        with contextlib.suppress(OSError):
            if json.loads(DEV_FILE.read_text()).get("pid") == os.getpid():
                DEV_FILE.unlink()
    if code:
        raise typer.Exit(code)


async def _serve(
    targets: list[str],
    sock: socket.socket,
    embedded: EmbeddedServer,
    sim: Any,
    host: str,
    port: int,
    size: int,
    reload: bool,
    drain_timeout: float,
    started: float,
) -> int:
    from outlast.cli.devsup import Supervisor, code_version, elapsed
    from outlast.control import Dispatcher
    from outlast.store.connect import connect

    out = make_console()
    api_url = f"http://{host}:{port}"
    sim_url = sim.url if sim is not None else None
    env = {**os.environ, ENV_URL: embedded.url, ENV_API: api_url, **llm_env(sim)}
    roots = watch_roots(targets)
    sup = Supervisor(
        targets, embedded.url, workers=size, env=env, drain_timeout=drain_timeout,
        say=lambda line: err_console.print(line, markup=False, highlight=False),
    )  # fmt: skip

    def record() -> None:
        valkey = embedded.process.pid if embedded.process else None
        state = {
            "pid": os.getpid(), "api_url": api_url, "console_url": f"{api_url}/", "redis_url": embedded.url,
            "data_dir": str(embedded.data_dir), "valkey_pid": valkey, "worker_pids": sup.pids,
            "standby_pids": sup.standby_pids,
            "version": sup.version, "apps": targets, "llm_simulator": sim_url, "standby_ready": sup.warm,
        }  # fmt: skip
        STATE_DIR.mkdir(exist_ok=True)
        tmp = DEV_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(DEV_FILE)

    # The workers first: their start-up (a Python process importing the app) is the longest part,
    # and the API and the simulator come up in this process meanwhile.
    version = code_version(roots)
    fresh = await sup.spawn(version)
    try:
        server = _api_server(embedded.url)
    except BaseException:
        await sup.stop(fresh, timeout=2.0)
        raise
    stop = asyncio.Event()
    interrupts = 0

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            sup.hurry()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    api_task = asyncio.create_task(server.serve(sockets=[sock]))
    valkey_died = _exit_of(embedded)
    sup.on_change(record)
    code = 0
    try:
        if sim is not None:
            await asyncio.to_thread(sim.start)
        await sup.start(version, fresh)
        async with connect(embedded.url) as redis:
            dispatcher = Dispatcher(redis)
            await dispatcher.promote(version)
            while not server.started and not api_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # uvicorn's only readiness signal is this flag
            if api_task.done():
                raise OutlastError(f"the API did not start on {api_url}")
            record()
            names = sorted({n for w in sup.current for n in w.names})
            _banner(out, api_url, embedded, sup, names, sim_url, roots if reload else [], elapsed(started))
            watcher = None
            if reload:
                await sup.warm_up()
                watcher = asyncio.create_task(_watch(roots, sup, dispatcher, stop))
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            ends: list[asyncio.Future[Any]] = [stopping, valkey_died, api_task]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            if valkey_died.done():
                err_console.print(
                    f"[red]error:[/red] Valkey (pid {valkey_died.result()}) died; see "
                    f"{embedded.data_dir / 'server.log'}. Stopping; run `outlast dev` again (no data is lost)"
                )
                code = 1
            elif api_task.done():
                err_console.print(f"[red]error:[/red] the API on {api_url} stopped; stopping outlast dev")
                code = 1
            else:
                err_console.print("stopping: workers hand their runs over, then Valkey saves its data")
    finally:
        await sup.stop()
        server.should_exit = True
        await asyncio.gather(api_task, return_exceptions=True)
        valkey_died.cancel()
    return code


def _api_server(redis_url: str) -> Any:
    """The API (and console) as a uvicorn server to run in this process's event loop."""
    import uvicorn

    from outlast.api import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # outlast dev handles SIGINT/SIGTERM itself
            yield

    config = uvicorn.Config(
        create_app(redis_url), log_level="warning", access_log=False, lifespan="on",
        http="httptools", timeout_graceful_shutdown=3,
    )  # fmt: skip
    return _Server(config)


def _exit_of(embedded: EmbeddedServer) -> asyncio.Future[int]:
    """Resolves with Valkey's pid when it exits (a daemon thread waits: the default executor would
    hold up the event loop's close until Valkey is stopped, which happens after it)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    proc = embedded.process

    def wait() -> None:
        if proc is None:
            return
        proc.wait()

        def settle() -> None:
            if not future.done():
                future.set_result(proc.pid)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=wait, name="valkey-exit", daemon=True).start()
    return future


async def _watch(roots: list[Path], sup: Any, dispatcher: Any, stop: asyncio.Event) -> None:
    from watchfiles import PythonFilter, awatch

    from outlast.cli.devsup import DevError, code_version, elapsed

    async for changes in awatch(*roots, watch_filter=PythonFilter(), stop_event=stop, debounce=200, step=20):
        t0 = time.monotonic()
        files = sorted({Path(p).name for _, p in changes})
        version = code_version(roots)
        what = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        try:
            old = await sup.replace(version)
            previous = await dispatcher.promote(version)
        except DevError as exc:
            err_console.print(
                f"[red]reload failed[/red] ({what} changed): {exc}; still serving {sup.version}",
                highlight=False,
            )
            continue
        err_console.print(
            f"[green]reloaded[/green] ({what} changed): {len(sup.current)} workers of {version} serving "
            f"in {elapsed(t0)} (was {previous or 'none'}); {len(old)} old workers draining",
            highlight=False,
        )


def _banner(
    out: Any, api_url: str, embedded: EmbeddedServer, sup: Any, names: list[str], sim: str | None,
    roots: list[Path], took: str,
) -> None:  # fmt: skip
    flows = ", ".join(names)
    count = len(sup.current)
    out.print(f"[bold]outlast dev[/bold] ready in {took}: {count} workers of {sup.version} ({flows})")
    out.print(f"  console  {api_url}/")
    out.print(f"  API      {api_url}  (OpenAPI: {api_url}/docs)")
    out.print(f"  Redis    {embedded.url}  (data in {embedded.data_dir}, kept across restarts)")
    if sim:
        out.print(f"  LLM      simulator at {sim} (no OPENAI_API_KEY/ANTHROPIC_API_KEY set)")
    out.print("In another shell:")
    out.print(f"  export {ENV_API}={api_url}")
    out.print(f"  export {ENV_URL}={embedded.url}")
    out.print(f"  outlast run {names[0] if names else 'WORKFLOW'} --input '{{}}'")
    where = ", ".join(str(r) for r in roots)
    out.print((f"Watching {where} for changes. " if roots else "") + "Ctrl-C stops everything.")
