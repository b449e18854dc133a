"""Running the real `outlast` command line in subprocesses, and `outlast dev` in a folder."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

CLI = [sys.executable, "-m", "outlast.cli"]
APP = Path(__file__).with_name("dev_app.py")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point a command at a store, API or provider."""
    drop = ("OUTLAST_REDIS_URL", "OUTLAST_API_URL", "OUTLAST_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
            "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OUTLAST_DEBUG", "COLUMNS")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path.cwd()), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=clean_env(**env),
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line a failed command printed (asserting there is exactly one)."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children started in their own session included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running_in(folder: Path) -> set[int]:
    """Live processes whose working directory is ``folder`` (what a dev there started, wherever
    they were re-parented)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if Path(os.readlink(entry / "cwd")) == folder.resolve() and alive(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Lines:
    """The lines a pipe produces, read on a thread, awaited by pattern."""

    def __init__(self, pipe: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[str]) -> None:
        with pipe:
            for line in pipe:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern)
        for line in self.seen:
            if (match := regex.search(line)) is not None:
                return match
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout}s; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"the stream ended before {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            if (match := regex.search(line)) is not None:
                return match


class Dev:
    """``outlast dev flows.py`` running in ``folder`` (a copy of dev_app.py is its flows.py)."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.app = folder / "flows.py"
        if not self.app.exists():
            shutil.copy(APP, self.app)
        self.proc = subprocess.Popen(
            [*CLI, "dev", "flows.py", "--port", "0", *args],
            cwd=folder, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def ready(self, timeout: float = 90) -> Dev:
        self.out.wait_for(r"Ctrl-C stops everything", timeout)
        return self

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.folder / ".outlast" / "dev.json").read_text())
        return state

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The command line run in the dev's folder (it finds the dev by itself)."""
        return cli(*args, cwd=self.folder, timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Test teardown after a failure: nothing may outlive the test."""
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
