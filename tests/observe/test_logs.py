"""Log formats: JSON when stderr is not a terminal, text on one (a real pseudo-terminal), with the
run context; the API names the run of a request. (A real worker's stderr: tests/worker/test_logging.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from outlast.errors import ConfigError
from outlast.observe.logs import RunContextMiddleware, bind_run, configure_logging, run_id_var, worker_id_var
from tests.pty_support import read_until_closed

SCRIPT = """
import asyncio, logging
from outlast.observe.logs import bind_run, configure_logging, worker_id_var
configure_logging()
worker_id_var.set("w-1")
async def run():
    bind_run("run-9", 2)
    logging.getLogger("app").warning("inside %s", "the run")
asyncio.run(run())
logging.getLogger("outlast.worker").info("outside")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_LOG")}


def test_json_lines_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), check=True
    )
    inside, outside = (json.loads(line) for line in done.stderr.splitlines())
    assert {k: inside[k] for k in ("level", "logger", "msg", "run_id", "attempt", "worker_id")} == {
        "level": "warning", "logger": "app", "msg": "inside the run", "run_id": "run-9", "attempt": 2,
        "worker_id": "w-1",
    }  # fmt: skip
    assert inside["ts"].endswith("Z")
    # The run's context was the task's: outside it only the worker is named.
    assert (outside["msg"], outside.get("run_id"), outside["worker_id"]) == ("outside", None, "w-1")


def test_text_on_a_terminal() -> None:
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stderr=secondary, env=_env())
        os.close(secondary)
        output = read_until_closed(primary)
        assert proc.wait(30) == 0
    finally:
        os.close(primary)
    text = output.decode()
    assert "WARNING app [run=run-9 attempt=2 worker=w-1] inside the run" in text
    assert "INFO    outlast.worker [worker=w-1] outside" in text
    assert "{" not in text


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_format_is_configurable_and_checked() -> None:
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    configure_logging("json", stream=stream)  # replaces its own handler, never adds a second
    assert [h.get_name() for h in logging.getLogger().handlers].count("outlast") == 1
    logging.getLogger("x").info("hello")
    assert json.loads(stream.getvalue())["msg"] == "hello"
    with pytest.raises(ConfigError, match="use json, text or auto"):
        configure_logging("yaml", stream=stream)


@pytest.mark.usefixtures("restore_root")
async def test_the_api_middleware_names_the_run_of_a_request() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        logging.getLogger("outlast.api").warning("serving %s", scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    transport = httpx.ASGITransport(app=RunContextMiddleware(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        await client.get("/v1/runs/01abc/events")
        await client.get("/v1/workflows")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    about_run, other = (r for r in records if r["logger"] == "outlast.api")
    assert about_run["run_id"] == "01abc"
    assert "run_id" not in other  # each request's context is its own


async def test_bind_run_sets_the_context_of_the_current_task_only() -> None:
    async def inner() -> str | None:
        bind_run("r1", 1)
        return worker_id_var.get()  # inherited from the task that created this one

    token = worker_id_var.set("w")
    try:
        assert await asyncio.create_task(inner()) == "w"
        assert run_id_var.get() is None  # the child task's bind_run stayed in the child
    finally:
        worker_id_var.reset(token)
