"""The worker processes of ``outlast dev``: generations of them, reloads, and stopping them by pid.

A *generation* is N ``outlast dev-worker`` processes of one code version. A reload starts the next
generation, waits until every one of its workers registered, promotes its version, then SIGTERMs
the old generation: its workers stop taking runs, let in-flight runs finish for the drain timeout
and hand the rest over (dev workflows are upgrade-safe, so the new code takes them). Each child is
started in its own session, so a terminal's Ctrl-C reaches only ``outlast dev``, which then stops
them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from outlast.cli.devworker import READY, STANDBY
from outlast.errors import OutlastError

IGNORED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".tox", ".outlast", ".hypothesis", "site-packages"}
)  # fmt: skip


class DevError(OutlastError):
    """A generation of workers could not start (the app does not import, a worker died...)."""


def python_files(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS and not d.startswith("."))
            found += [Path(folder) / f for f in sorted(files) if f.endswith(".py")]
    return found


def code_version(roots: Iterable[Path]) -> str:
    """``dev-<hash of the app's Python files>``: the same code gets the same version after a restart."""
    digest = hashlib.sha1()
    for path in python_files(roots):
        with contextlib.suppress(OSError):
            digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"dev-{digest.hexdigest()[:8]}"


@dataclass
class WorkerProc:
    proc: asyncio.subprocess.Process
    version: str
    name: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    warm: bool = False  # a standby worker that has imported what it can ahead of a reload
    lines: list[str] = field(default_factory=list)  # the last lines it printed (for error messages)
    names: list[str] = field(default_factory=list)  # the workflows it serves (from its ready line)
    retiring: bool = False
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class Supervisor:
    """Starts, reloads, replaces and stops the dev workers. ``say`` prints one line."""

    def __init__(
        self,
        targets: list[str],
        redis_url: str,
        *,
        workers: int,
        env: dict[str, str],
        drain_timeout: float,
        say: Callable[[str], None],
    ) -> None:
        self.targets = targets
        self.redis_url = redis_url
        self.size = workers
        self.env = env
        self.drain_timeout = drain_timeout
        self.say = say
        self.current: list[WorkerProc] = []
        self.retired: list[WorkerProc] = []
        self.standby: list[WorkerProc] = []  # warm processes for the next reload
        self._warming: asyncio.Task[None] | None = None
        self.version = ""
        self.stopping = False
        self._count = 0
        self._changed: Callable[[], None] = lambda: None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Called whenever the set of worker pids changes (``outlast dev`` rewrites its state file)."""
        self._changed = callback

    @property
    def warm(self) -> bool:
        """Whether the next reload has standby workers ready."""
        return len(self.standby) == self.size and all(w.warm for w in self.standby)

    @property
    def pids(self) -> list[int]:
        """Workers serving or draining (not the standby ones)."""
        return [w.pid for w in [*self.current, *self.retired] if w.proc.returncode is None]

    @property
    def standby_pids(self) -> list[int]:
        return [w.pid for w in self.standby if w.proc.returncode is None]

    def _all(self) -> list[WorkerProc]:
        return [*self.current, *self.retired, *self.standby]

    async def _spawn(self, version: str | None) -> WorkerProc:
        """A worker of ``version``, or (None) a standby one waiting for its version on stdin."""
        self._count += 1
        cmd = [
            sys.executable, "-m", "outlast.cli", "dev-worker", *self.targets,
            *(["--version", version] if version else ["--standby"]),
            "--redis", self.redis_url, "--drain-timeout", str(self.drain_timeout),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL if version else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # Ctrl-C in the terminal reaches only outlast dev
        )
        worker = WorkerProc(proc, version or "", f"w{self._count}")
        worker.reader = asyncio.create_task(self._read(worker))
        return worker

    async def _read(self, worker: WorkerProc) -> None:
        if worker.proc.stdout is None:
            return
        async for raw in worker.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith(READY):
                worker.names = line.split()[-1].split(",")
                worker.ready.set()
                continue
            if line == STANDBY:
                worker.warm = True
                self._changed()
                continue
            worker.lines = [*worker.lines[-4:], line]
            if line:
                self.say(f"[{worker.name} pid {worker.pid}] {line}")
        code = await worker.proc.wait()
        self._changed()
        if worker.retiring or self.stopping or worker not in self.current or not worker.ready.is_set():
            return
        self.say(f"worker {worker.name} (pid {worker.pid}) exited with code {code}; starting a replacement")
        replacement = await self._spawn(worker.version)
        self.current = [replacement if w is worker else w for w in self.current]
        self._changed()

    async def spawn(self, version: str) -> list[WorkerProc]:
        """N new workers of ``version`` (not waited for: see :meth:`start_generation`)."""
        return [await self._spawn(version) for _ in range(self.size)]

    async def start_generation(
        self, version: str, fresh: list[WorkerProc] | None = None, timeout: float = 60.0
    ) -> list[WorkerProc]:
        """N workers of ``version`` (``fresh``: already spawned), each registered; DevError (and none
        left running) otherwise."""
        fresh = fresh if fresh is not None else await self.spawn(version)
        waits = [asyncio.ensure_future(w.ready.wait()) for w in fresh]
        exits = [asyncio.ensure_future(w.proc.wait()) for w in fresh]
        try:
            async with asyncio.timeout(timeout):
                while not all(w.ready.is_set() for w in fresh):
                    pending = [f for f in waits + exits if not f.done()]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    dead = next((w for w in fresh if w.proc.returncode is not None), None)
                    if dead is not None:
                        if dead.reader is not None:
                            await dead.reader  # its last lines say why
                        raise DevError(_why(dead))
        except (DevError, TimeoutError) as exc:
            await self.stop(fresh, timeout=2.0)
            if isinstance(exc, DevError):
                raise
            raise DevError(f"workers did not register within {timeout:.0f}s") from None
        finally:
            for f in waits + exits:
                f.cancel()
        return fresh

    async def start(self, version: str, fresh: list[WorkerProc] | None = None) -> None:
        self.current = await self.start_generation(version, fresh)
        self.version = version
        self._changed()

    async def warm_up(self) -> None:
        """Start standby workers for the next reload (they import Outlast while nothing changes)."""
        if not self.stopping and not self.standby:
            self.standby = [await self._spawn(None) for _ in range(self.size)]
            self._changed()

    async def _activate(self, version: str) -> list[WorkerProc] | None:
        """The standby workers, told ``version`` (None if they are not all there)."""
        ready, self.standby = self.standby, []
        if len(ready) < self.size or any(
            w.proc.returncode is not None or w.proc.stdin is None for w in ready
        ):
            await self.stop(ready, timeout=2.0)
            return None
        try:
            for w in ready:
                w.version = version
                if w.proc.stdin is not None:
                    w.proc.stdin.write(f"{version}\n".encode())
                    await w.proc.stdin.drain()
                    w.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):  # one died just now: start fresh ones
            await self.stop(ready, timeout=2.0)
            return None
        return ready

    async def replace(self, version: str) -> list[WorkerProc]:
        """Start the next generation (the caller promotes it), then retire the current one."""
        try:
            fresh = await self.start_generation(version, await self._activate(version))
        finally:
            self._warming = asyncio.create_task(self.warm_up())  # for the reload after this one
        old, self.current, self.version = self.current, fresh, version
        for w in old:
            w.retiring = True
            w.signal(signal.SIGTERM)  # drain: finish for drain_timeout, then hand over
        self.retired = [w for w in [*self.retired, *old] if w.proc.returncode is None]
        self._changed()
        return old

    async def stop(self, workers: list[WorkerProc] | None = None, *, timeout: float | None = None) -> None:
        """SIGTERM (drain), then SIGKILL whoever is still there after ``timeout``; reap them all."""
        if workers is None:
            self.stopping = True
            if self._warming is not None:
                await asyncio.gather(self._warming, return_exceptions=True)
        targets = workers if workers is not None else self._all()
        for w in targets:
            w.signal(signal.SIGTERM)
        limit = self.drain_timeout + 5.0 if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(w.proc.wait() for w in targets))
        except TimeoutError:
            for w in targets:
                w.signal(signal.SIGKILL)
            await asyncio.gather(*(w.proc.wait() for w in targets))
        readers = [w.reader for w in targets if w.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)

    def hurry(self) -> None:
        """A second Ctrl-C: workers skip the rest of their drain (they hand their runs over now)."""
        for w in [*self.current, *self.retired]:
            w.signal(signal.SIGTERM)


def _why(worker: WorkerProc) -> str:
    said = next((line for line in reversed(worker.lines) if line.strip()), "")
    said = said.removeprefix("error: ")
    return f"a worker exited with code {worker.proc.returncode}" + (f": {said}" if said else "")


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.2f}s"
