"""The workflow the failover tests run: long runs of short steps, every step body noted in a file.

The Redis server dies in those tests, so the notes go to ``FAILOVER_LOG`` (one line per body
start: ``start <tag> <i>``). A step's body starts only once the previous step's commit was
acknowledged (the next step awaits the writer's barrier), so ``start <tag> <i+1>`` in the file
means step ``i``'s commit was acknowledged to the worker.
"""

from __future__ import annotations

import asyncio
import os

from outlast import component, workflow


def note(line: str) -> None:
    fd = os.open(os.environ["FAILOVER_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())  # one write(2) of one short line: never interleaved
    finally:
        os.close(fd)


@component
async def stage(tag: str, i: int, delay: float) -> int:
    note(f"start {tag} {i}")
    await asyncio.sleep(delay)  # the step "works" while the test kills the master
    return i


@workflow
async def long_run(tag: str, steps: int = 20, delay: float = 0.05) -> int:
    total = 0
    for i in range(steps):
        total += await stage(tag, i, delay)
    return total
