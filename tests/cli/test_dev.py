"""`outlast dev`: one command brings the stack up, reloads on code changes without losing runs,
keeps history across restarts, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from outlast.client import Client
from outlast.errors import RunFailed
from tests.cli.support import Dev, alive, cli, descendants, one_line_error, running_in


def _gone(pids: set[int], timeout: float = 30) -> set[int]:
    """The pids still alive once the dev has exited and had ``timeout`` to reap (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling /proc for process exits: there is no event to await
    return left


@pytest.mark.timeout(300)
def test_dev_serves_reloads_keeps_history_and_stops_clean(tmp_path: Path) -> None:
    dev = Dev(tmp_path, "--workers", "2", "--drain-timeout", "1").ready()
    try:
        banner = "\n".join(dev.out.seen)
        state = dev.state
        api = state["api_url"]
        assert f"console  {api}/" in banner
        assert f"export OUTLAST_API_URL={api}" in banner
        assert f"export OUTLAST_REDIS_URL={state['redis_url']}" in banner
        assert "LLM      simulator at" in banner  # no provider key in the environment
        assert len(state["worker_pids"]) == 2

        # Another shell: the commands find this folder's dev by themselves, and say so.
        done = dev.cli("run", "blog", "--input", '{"topic": "durable AI"}')
        assert done.returncode == 0, done.stderr
        assert f"using API {api} (the outlast dev of this folder" in done.stderr
        assert done.stdout.splitlines()[-1].split()[1] == "run.completed"

        with Client(api) as client:
            # A run streaming when the code changes: new workers take over, the run completes.
            inflight = client.start("slow", {"words": 30, "pause": 0.1}).run_id
            for event in client.events(inflight):
                if event.type == "output":
                    break
            old_pids = set(state["worker_pids"])
            dev.app.write_text(dev.app.read_text() + "\n# edited\n")
            line = dev.err.wait_for(r"reloaded \(flows\.py changed\): 2 workers of (dev-\w+) serving").string
            assert "old workers draining" in line
            assert client.result(inflight, timeout=60).startswith("slow-0 slow-1")
            assert not _gone(old_pids), "the old workers drained and exited"
            assert set(dev.state["worker_pids"]).isdisjoint(old_pids)

            # A waiting run whose recorded step no longer matches the code fails naming the step.
            waiting = client.start("review", {"doc": "plan"}).run_id
            for event in client.events(waiting):
                if event.type == "run.waiting":
                    break
            dev.app.write_text(dev.app.read_text().replace("await prepare(doc)", "await prepare_v2(doc)"))
            dev.err.wait_for(r"reloaded .* \(was " + re.escape(dev.state["version"]) + r"\)")
            answered = dev.cli("input", waiting, "approve", "--json", '{"ok": true}')
            assert answered.returncode == 0, answered.stderr
            with pytest.raises(RunFailed):
                client.result(waiting, timeout=60)
            ended = client.get(waiting)
            assert ended.status == "failed"
            assert ended.error is not None
            assert ended.error["reason"] == "non_determinism"
            assert "prepare" in ended.error["message"]
            assert ended.error["step"] == "prepare#0"

        # Ctrl-C stops everything it started, by pid.
        children = descendants(dev.proc.pid)
        assert set(dev.state["standby_pids"]) <= children
        assert state["valkey_pid"] in children
        assert set(dev.state["worker_pids"]) <= children
        assert dev.stop() == 0
        assert not _gone(children, timeout=5), "processes left behind"
        assert not running_in(tmp_path)
        assert not (tmp_path / ".outlast" / "dev.json").exists()

        # History survives a restart.
        dev = Dev(tmp_path).ready()
        listed = dev.cli("runs", "--limit", "50")
        assert listed.returncode == 0, listed.stderr
        for run_id in (inflight, waiting):
            assert run_id in listed.stdout
        assert dev.stop() == 0
    finally:
        dev.kill()


def test_dev_port_taken_is_one_line_before_any_url(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "flows.py").write_text(Path(__file__).with_name("dev_app.py").read_text())
        result = cli("dev", "flows.py", "--port", str(port), cwd=tmp_path)
    line = one_line_error(result)
    taken_msg = f"error: port {port} on 127.0.0.1 is taken (Address already in use); "
    assert line == taken_msg + "stop what uses it or pass --port N"
    assert result.returncode == 1
    assert "http://" not in result.stdout
    assert not (tmp_path / ".outlast" / "data").exists()  # nothing was started


def test_dev_with_a_broken_app_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text("import outlast\n\ndef broken(:\n")
    dev = Dev(tmp_path)
    try:
        line = dev.err.wait_for(r"^error:", timeout=90).string
        assert re.match(
            r"error: a worker exited with code 1: flows\.py: importing it failed: SyntaxError", line
        )
        assert dev.proc.wait(60) == 1
        assert not any("Traceback" in seen for seen in dev.err.seen)
        assert not descendants(dev.proc.pid)
    finally:
        dev.kill()


@pytest.mark.timeout(240)
def test_a_killed_dev_leaves_no_workers_and_its_successor_stops_the_old_valkey(tmp_path: Path) -> None:
    dev = Dev(tmp_path, "--workers", "2", "--drain-timeout", "1").ready()
    state = dev.state
    leftovers = {state["valkey_pid"], *state["worker_pids"], *state["standby_pids"]}
    successor: Dev | None = None
    try:
        done = dev.cli("run", "blog", "--input", '{"topic": "orphans"}')
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.split()[0]
        dev.proc.kill()  # SIGKILL: `outlast dev` cannot stop anything itself
        dev.proc.wait()
        # Its workers follow it (parent-death signal, then a drain): none keeps serving.
        assert not _gone({*state["worker_pids"], *state["standby_pids"]}), "workers outlived outlast dev"
        assert alive(state["valkey_pid"])  # a server cannot be told; the next dev stops it
        successor = Dev(tmp_path).ready()
        assert not _gone({state["valkey_pid"]}, timeout=5), "the orphaned Valkey still runs"
        assert successor.state["valkey_pid"] != state["valkey_pid"]
        listed = successor.cli("runs", "--limit", "10")
        assert run_id in listed.stdout  # the orphan flushed its AOF on the way out: nothing lost
        successor.err.wait_for(rf"stopped the Valkey \(pid {state['valkey_pid']}\) a killed outlast dev")
        assert successor.stop() == 0
    finally:
        for pid in leftovers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if successor is not None:
            successor.kill()
