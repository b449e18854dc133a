"""``outlast``: the command line.

Every error is one line on stderr saying what to do; exit codes: 0 success, 1 an error (the store
or API unreachable, an unknown run, a run that failed), 2 a usage mistake (a bad option or
argument, malformed JSON), 130 interrupted. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from outlast.errors import OutlastError

T = TypeVar("T")
ENV_DEBUG = "OUTLAST_DEBUG"

app = typer.Typer(
    name="outlast",
    help="Durable, streaming workflows for long-running AI apps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def make_console(*, stderr: bool = False) -> Console:
    """A console that wraps only on a terminal: piped output and logs keep whole lines."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(stderr=stderr, highlight=False, soft_wrap=not tty, width=None if tty else 10_000)


console = make_console()
err_console = make_console(stderr=True)

RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis",
        help="Redis URL (default: $OUTLAST_REDIS_URL, else the outlast dev/server of this folder).",
    ),
]
ApiOption = Annotated[
    str | None,
    typer.Option("--api", help="API URL (default: $OUTLAST_API_URL, else the outlast dev of this folder)."),
]


def debugging() -> bool:
    return bool(os.environ.get(ENV_DEBUG))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` (one line) and exit with ``code``."""
    if debugging() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def note(message: str) -> None:
    """A dim line on stderr (which store or API is used, what dev did): stdout stays parseable."""
    err_console.print(f"[dim]{escape(message)}[/dim]")


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
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _use(what: str, option: str | None) -> str:
    from outlast.cli import discover

    try:
        found = discover.find_redis(option) if what == "Redis" else discover.find_api(option)
    except OutlastError as exc:
        fail(str(exc))
    if found.source:
        note(f"using {what} {found.url} ({found.source})")
    return found.url


def redis_url(option: str | None) -> str:
    """The store this command uses (see :mod:`outlast.cli.discover`), said on stderr when found."""
    return _use("Redis", option)


def api_url(option: str | None) -> str:
    """The API this command uses, said on stderr when found."""
    return _use("API", option)


def _version(value: bool) -> None:
    if value:
        from outlast import __version__

        console.print(f"outlast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks with errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Durable, streaming workflows for long-running AI apps."""
    if debug:
        os.environ[ENV_DEBUG] = "1"


def main() -> None:
    from outlast.cli import api, compute, dev, devworker, live, llm, local, stackdemo, top  # noqa: F401

    api.register(app)
    try:
        app()
    except OutlastError as exc:  # raised outside a command's event loop (e.g. loading the app)
        if debugging():
            traceback.print_exc()
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    except Exception as exc:
        if debugging():
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} "
            "(run with --debug for the traceback, and please report it)"
        )
        sys.exit(1)
