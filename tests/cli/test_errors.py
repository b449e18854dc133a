"""CLI error hygiene (#15 items 10, 11, 12, 14, 16, 23) and store discovery, through the real command
line in subprocesses: one line saying what to do, the documented exit code, never a traceback."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import outlast
from outlast.control import Dispatcher
from outlast.core.runner import run_local
from outlast.store.embedded import EmbeddedServer
from outlast.worker import Worker
from tests.cli.support import CLI, Lines, clean_env, cli, one_line_error

APP = "tests/cli/dev_app.py"


@outlast.workflow
async def quick(n: int) -> int:
    return n + 1


async def _finished_run(redis: aioredis.Redis) -> tuple[str, int]:
    worker = Worker([quick], redis, heartbeat=0.2, lease_timeout=1.0)
    started = await Dispatcher(redis).start(quick, {"n": 1})
    await worker.run_until_idle()
    record = await Dispatcher(redis).store.get_run(started.run_id)
    assert record.status == "completed"
    return started.run_id, record.last_seq


async def _xreads(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


async def test_events_after_the_end_of_a_finished_run_returns_without_waiting(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """Item 10: no blocking read (it used to wait out a 5 s XREAD BLOCK) and nothing printed."""
    run_id, last = await _finished_run(redis)
    before = await _xreads(redis)
    result = cli("events", run_id, "--after", str(last), "--redis", redis_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert await _xreads(redis) == before

    past = cli("events", run_id, "--after", str(last + 5), "--redis", redis_url)
    assert one_line_error(past) == (
        f"error: --after {last + 5} is past the end of run {run_id} (its last seq is {last})"
    )
    assert past.returncode == 1
    unknown = cli("events", "nosuchrun", "--redis", redis_url)
    assert "error: no run 'nosuchrun'" in one_line_error(unknown)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("api", "--redis", "notaurl"),
            "error: --redis 'notaurl' is not a Redis URL; expected e.g. redis://",
        ),
        (("worker", APP, "--redis", "notaurl"), "error: --redis 'notaurl' is not a Redis URL"),
        (("workers", "--redis", "notaurl"), "error: --redis 'notaurl' is not a Redis URL"),
        (("server", "--data-dir", "/proc/nope"), "error: cannot use data dir /proc/nope: "),
        (
            ("workers", "--redis", "redis://127.0.0.1:1/0"),
            "error: cannot reach Redis at redis://127.0.0.1:1/0 (",
        ),
    ],
)
def test_bad_settings_are_one_line_and_exit_1(args: tuple[str, ...], message: str) -> None:
    """Item 11 (and item 14's `Connection refused.;`)."""
    result = cli(*args)
    line = one_line_error(result)
    assert line.startswith(message), line
    assert result.returncode == 1
    assert "internal error" not in result.stderr
    assert ".;" not in line


async def test_execute_of_an_unknown_run_exits_1(redis_url: str) -> None:
    """Item 12."""
    result = cli("execute", "NOSUCHRUN", APP, "--redis", redis_url)
    assert one_line_error(result) == "error: no run 'NOSUCHRUN' in this store: nothing to execute"
    assert result.returncode == 1


def test_exit_codes_agree_with_the_readme() -> None:
    """Item 14: usage mistakes exit 2, errors 1 (README: "Exit codes")."""
    assert "usage mistake" in Path("README.md").read_text()
    assert cli("input", "r", "k", "--json", "{x").returncode == 2
    assert cli("events", "r1", "--after", "-5").returncode == 2
    assert cli("run", "blog", "--input", "[", "--api", "http://127.0.0.1:1").returncode == 2
    assert cli("workers", "--redis", "redis://127.0.0.1:1/0").returncode == 1


def test_errors_are_never_wrapped_when_not_a_terminal(tmp_path: Path) -> None:
    """Item 14: a long message stays one line even when COLUMNS is small."""
    deep = tmp_path / ("a-long-folder-name-" * 6) / "flows.py"
    result = cli("worker", str(deep), COLUMNS="40")
    assert result.stderr.strip() == f"error: {deep}: no such file"


def test_an_oversized_event_from_the_workflow_body_names_no_step() -> None:
    """Item 14: `(step None)`."""

    @outlast.workflow
    async def shouty() -> None:
        outlast.emit("blob", "x" * 2_000_000)

    ended = asyncio.run(run_local(shouty))
    assert ended.status == "failed"
    assert ended.error is not None
    assert ended.error["type"] == "SerializationError"
    assert "(step None)" not in ended.error["message"]
    assert "bytes exceeds the 1,048,576-byte limit (from the workflow body)" in ended.error["message"]


def test_api_on_a_taken_port_is_one_line_before_any_url(redis_url: str) -> None:
    """Item 16."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("api", "--port", str(port), "--redis", redis_url)
    assert (
        one_line_error(result)
        == f"error: port {port} on 127.0.0.1 is taken; stop what uses it or pass --port N"
    )
    assert "http://" not in result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_server_exits_1_when_its_valkey_dies_and_releases_the_data_dir(tmp_path: Path) -> None:
    """Item 23: SIGKILL the valkey-server child of `outlast server`."""
    proc = subprocess.Popen(
        [*CLI, "server", "--data-dir", str(tmp_path / "data")],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        out.wait_for(r"export OUTLAST_REDIS_URL=redis://127.0.0.1:\d+/0")
        lock = (tmp_path / "data" / "outlast.lock").read_text()
        valkey = [int(p) for p in re.findall(r"pid (\d+)", lock)]
        assert valkey == [proc.pid]
        child = next(
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _ppid(entry) == proc.pid and "valkey" in _cmd(entry)
        )
        os.kill(child, signal.SIGKILL)
        line = err.wait_for(r"^error:").string
        assert line.startswith(f"error: valkey-server (pid {child}) exited with code -9; see ")
        assert proc.wait(30) == 1
        with (tmp_path / "data" / "outlast.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: a new server may start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ppid(entry: Path) -> int:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _cmd(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_commands_find_the_server_of_this_folder_and_say_so(tmp_path: Path) -> None:
    nothing = cli("workers", cwd=tmp_path)
    assert one_line_error(nothing) == (
        "error: no Outlast store found: start `outlast dev` (or `outlast server`) in this folder, "
        "or pass --redis URL / set OUTLAST_REDIS_URL"
    )
    assert not (tmp_path / ".outlast").exists()  # no private, empty Valkey was started

    with EmbeddedServer(tmp_path / ".outlast" / "data") as server:
        found = cli("workers", cwd=tmp_path)
        assert found.returncode == 0, found.stderr
        assert (
            found.stderr.strip()
            == f"using Redis {server.url} (the outlast server of this folder, pid {os.getpid()})"
        )
        assert found.stdout.strip() == "no live workers"

        from_env = cli("workers", cwd=tmp_path, OUTLAST_REDIS_URL=server.url)
        assert from_env.stderr.strip() == f"using Redis {server.url} ($OUTLAST_REDIS_URL)"
        explicit = cli("workers", "--redis", server.url, cwd=tmp_path)
        assert explicit.stderr == ""

    no_api = cli("runs", cwd=tmp_path)
    assert one_line_error(no_api).startswith(
        "error: no Outlast API found: start `outlast dev` in this folder"
    )


def test_debug_shows_the_traceback() -> None:
    plain = cli("workers", "--redis", "redis://127.0.0.1:1/0")
    assert "Traceback" not in plain.stderr
    debug = cli("--debug", "workers", "--redis", "redis://127.0.0.1:1/0")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "error: cannot reach Redis" in debug.stderr
