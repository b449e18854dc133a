"""Pluggable compute: who executes a run once a worker picked it from the queue.

By default a worker executes runs itself, as asyncio tasks. With a :class:`Launcher` it only
*dispatches*: for each run it reads from the queue (or finds orphaned by a dead owner) it calls
``launch(run_id)``, and whatever was launched executes ``outlast execute RUN_ID APP`` — given
nothing but the run id; everything else (input, checkpoints, lease, events) goes through Redis.
The launched process claims the run with the same fenced CLAIM as a worker, heartbeats its
lease, replays completed steps and exits when the run ends.

:class:`SubprocessLauncher` starts a local process per run. A serverless or Kubernetes launcher
is the same few lines: ``launch`` creates a function invocation or a Job whose command is
``outlast execute RUN_ID APP --redis URL`` and returns a handle whose ``wait()`` resolves when it
finished (or at once, for fire-and-forget platforms: the lease still protects the run, and a
dead execution is taken over like a dead worker). See docs/compute.md.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol


class Launched(Protocol):
    async def wait(self) -> int:
        """Resolve when the execution ended; its exit status."""
        ...


class Launcher(Protocol):
    async def launch(self, run_id: str) -> Launched:
        """Start executing ``run_id`` somewhere (it claims the run itself)."""
        ...


class _Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def wait(self) -> int:
        return await self.proc.wait()


class SubprocessLauncher:
    """Runs each run in a fresh ``outlast execute`` subprocess on this machine."""

    def __init__(
        self, target: str, redis_url: str, *, heartbeat: float = 1.0, lease_timeout: float = 4.0
    ) -> None:
        self.target = target
        self.redis_url = redis_url
        self.heartbeat = heartbeat
        self.lease_timeout = lease_timeout

    async def launch(self, run_id: str) -> Launched:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from outlast.cli.main import main; main()", "execute", run_id, self.target,
            "--redis", self.redis_url, "--heartbeat", str(self.heartbeat),
            "--lease-timeout", str(self.lease_timeout),
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return _Process(proc)
