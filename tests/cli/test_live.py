"""The live terminal over HTTP against a real `outlast dev`: run, attach, runs, trace, top, events."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shlex
import signal
import struct
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlast.client import Client
from tests.cli.support import ANSI, CLI, Dev, Lines, clean_env, one_line_error
from tests.pty_support import read_until_closed


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    running = Dev(tmp_path_factory.mktemp("live"), "--workers", "1", "--no-reload").ready()
    yield running
    try:
        assert running.stop() == 0
    finally:
        running.kill()


def _seqs(lines: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in lines if line and line.split()[0].isdigit()]


@pytest.mark.timeout(120)
def test_ctrl_c_detaches_and_attach_continues_with_every_event_once(dev: Dev) -> None:
    proc = subprocess.Popen(
        [*CLI, "run", "slow", "--input", '{"words": 40, "pause": 0.05}'],
        cwd=dev.folder, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    out.wait_for(r"^6 output ")
    proc.send_signal(signal.SIGINT)
    hint = err.wait_for(
        r"detached from run (\S+) \(it goes on\); continue with: outlast attach (\S+) --after (\d+)"
    )
    assert proc.wait(30) == 130
    run_id, after = hint.group(1), int(hint.group(3))
    assert hint.group(2) == run_id
    assert out.wait_for(r"^\d+ ", 1)
    assert _seqs(out.seen)[-1] == after

    attached = dev.cli("attach", run_id, "--after", str(after))
    assert attached.returncode == 0, attached.stderr
    seqs = _seqs(out.seen) + _seqs(attached.stdout.splitlines())
    assert seqs == list(range(1, seqs[-1] + 1))  # no event missing or repeated
    assert attached.stdout.splitlines()[-1].split()[1] == "run.completed"


def _pty_run(cwd: Path, *args: str) -> str:
    """Run the command line on a pseudo-terminal (100×40) and return everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = clean_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        drawn = read_until_closed(master)
    finally:
        os.close(master)
        proc.wait(30)
    assert proc.returncode == 0, drawn
    return drawn.decode()


@pytest.mark.timeout(120)
def test_the_live_view_on_a_terminal(dev: Dev) -> None:
    drawn = _pty_run(dev.folder, "run", "blog", "--input", '{"topic": "pty"}')
    assert "\x1b[" in drawn  # drawn with colours and cursor moves, not plain lines
    text = ANSI.sub("", drawn).replace("\r", "")
    run_id = re.findall(r"blog (\w{26}) ", text)[-1]
    final = text[text.rindex(f"blog {run_id} completed") :]
    final = re.sub(r"\d+\.\d\ds", "T", final).replace(run_id, "RUN")
    assert final.strip() == SNAPSHOT.strip()


SNAPSHOT = """
blog RUN completed
├── ✓ research(topic="pty") T
├── ✓ write(heading="Intro", words=3, pause=0.0) T
│   └── Intro-0 Intro-1 Intro-2
└── ✓ write(heading="Body", words=3, pause=0.0) T
    └── Body-0 Body-1 Body-2
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 2/2 sections
completed
{
  "topic": "pty",
  "notes": [
    "pty survives crashes"
  ],
  "sections": [
    "Intro-0 Intro-1 Intro-2 ",
    "Body-0 Body-1 Body-2 "
  ]
}
"""


def test_events_pretty_renders_like_run(dev: Dev) -> None:
    with Client(dev.state["api_url"]) as client:
        run_id = client.start("blog", {"topic": "pretty"}, wait=30).run_id
    shown = dev.cli("events", run_id, "--pretty")
    assert shown.returncode == 0, shown.stderr
    assert f"blog {run_id} completed" in shown.stdout
    assert '├── ✓ research(topic="pretty")' in shown.stdout


def test_runs_filters(dev: Dev) -> None:
    with Client(dev.state["api_url"]) as client:
        done = client.start("blog", {"topic": "listed"}, wait=30).run_id
        waiting = client.start("review", {"doc": "x"}).run_id
        for event in client.events(waiting):
            if event.type == "run.waiting":
                break
    listed = dev.cli("runs", "--workflow", "review", "--status", "waiting")
    assert listed.returncode == 0, listed.stderr
    assert waiting in listed.stdout
    assert done not in listed.stdout
    newest = dev.cli("runs", "--limit", "1")
    assert [line.split()[0] for line in newest.stdout.splitlines()[1:]] == [waiting]
    assert "no runs match" in dev.cli("runs", "--workflow", "nope").stdout

    # The view of a waiting run shows the command that answers it, and that command works.
    shown = dev.cli("events", waiting, "--no-follow", "--pretty")
    answer = re.search(r"⏸ Approve\? → (outlast input .*)$", shown.stdout, re.MULTILINE)
    assert answer is not None, shown.stdout
    assert answer.group(1) == f"outlast input {waiting} approve --json '{{\"ok\": true}}'"
    answered = dev.cli(*shlex.split(answer.group(1))[1:])
    assert answered.returncode == 0, answered.stderr
    with Client(dev.state["api_url"]) as client:
        assert client.result(waiting, timeout=30) == {"doc": "X", "ok": True}


def test_trace_shows_tokens_and_cost_per_step_and_in_total(dev: Dev) -> None:
    ran = dev.cli("run", "ask", "--input", '{"question": "What is a durable step?"}')
    assert ran.returncode == 0, ran.stderr
    run_id = re.findall(r"\b(\w{26})\b", dev.cli("runs", "--workflow", "ask", "--limit", "1").stdout)[0]
    traced = dev.cli("trace", run_id)
    assert traced.returncode == 0, traced.stderr
    step = re.search(r"✓ \S+\(.*\) [\d.]+s sim/gpt-4o-mini tokens (\d+)→(\d+) \$([\d.]+)", traced.stdout)
    assert step is not None, traced.stdout
    tokens_in, tokens_out, cost = int(step.group(1)), int(step.group(2)), float(step.group(3))
    assert tokens_in > 0
    assert tokens_out > 0
    assert cost == pytest.approx((tokens_in * 0.15 + tokens_out * 0.6) / 1e6, rel=1e-3)
    assert (
        f"total: 1 LLM calls, {tokens_in} tokens in, {tokens_out} tokens out, ${step.group(3)}"
        in traced.stdout
    )


def test_run_mistakes_get_one_line(dev: Dev, tmp_path: Path) -> None:
    unknown = dev.cli("run", "nope")
    assert one_line_error(unknown) == "error: no workflow 'nope'; known: ask, blog, review, slow"
    assert unknown.returncode == 1

    bad = dev.cli("run", "blog", "--input", "{topic: 1}")
    assert one_line_error(bad).startswith("error: --input is not valid JSON (Expecting property name")
    assert bad.returncode == 2
    missing = dev.cli("run", "blog", "--input", f"@{tmp_path / 'missing.json'}")
    assert (
        one_line_error(missing)
        == f"error: cannot read {tmp_path / 'missing.json'}: No such file or directory"
    )
    (tmp_path / "list.json").write_text("[1, 2]")
    listed = dev.cli("run", "blog", "--input", f"@{tmp_path / 'list.json'}")
    assert "must be a JSON object of the workflow's arguments" in one_line_error(listed)
    schema = dev.cli("run", "blog", "--input", '{"topic": 5}')
    assert "topic" in one_line_error(schema)
    assert schema.returncode == 1

    down = dev.cli("run", "blog", "--api", "http://127.0.0.1:1")
    assert one_line_error(down) == (
        "error: cannot reach the API at http://127.0.0.1:1 (All connection attempts failed); "
        "start `outlast dev` in this folder, or pass --api URL / set OUTLAST_API_URL"
    )


def test_detach_prints_the_run_id(dev: Dev) -> None:
    started = dev.cli("run", "blog", "--input", '{"topic": "bg"}', "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert f"follow it with: outlast attach {run_id}" in started.stderr
    with Client(dev.state["api_url"]) as client:
        assert client.result(run_id, timeout=30)["topic"] == "bg"


def test_top_once(dev: Dev) -> None:
    shown = dev.cli("top", "--once")
    assert shown.returncode == 0, shown.stderr
    version = dev.state["version"]
    assert re.search(rf"{version}\s+\d+/10\s+serving", shown.stdout)
    assert f"versions (active: {version})" in shown.stdout


def test_version() -> None:
    from outlast import __version__

    shown = subprocess.run([*CLI, "--version"], capture_output=True, text=True, check=True, env=clean_env())
    assert shown.stdout.strip() == f"outlast {__version__}"
