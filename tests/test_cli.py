"""The `outlast` command line: its commands exist and user mistakes get a one-line answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from outlast.cli.main import main; main()"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def test_every_plane_has_its_commands() -> None:
    out = run_cli("--help").stdout
    for command in (
        "demo",
        "events",
        "server",
        "worker",
        "execute",
        "workers",
        "cancel",
        "deploy",
        "api",
        "llm-sim",
        "dev",
        "run",
        "attach",
        "runs",
        "trace",
        "top",
    ):
        assert command in out, command
    assert "dev-worker" not in out  # what `outlast dev` starts, not for users


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("worker", "no_such_module_xyz"), "cannot import 'no_such_module_xyz'"),
        (("worker", "missing.py"), "missing.py: no such file"),
        (("worker", "tests/worker/app.py", "--launcher", "lambda"), "--launcher must be"),
        (("events", "r1", "--after", "-1"), "--after must be 0 or more"),
        (("events", "r1", "--redis", "redis://127.0.0.1:1/0"), "cannot reach Redis"),
    ],
)
def test_mistakes_get_a_clear_message_and_no_traceback(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
