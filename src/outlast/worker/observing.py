"""The worker's side of :class:`~outlast.observe.RunObserver` (OpenTelemetry export): reports
run in background tasks, so an exporter never holds up a run or its slot, and are flushed (with a
bound) when the worker stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from outlast.observe import RunObserver

log = logging.getLogger("outlast.worker")


class Observing:
    """Background reports to ``observer`` (none: every call is a no-op)."""

    def __init__(self, observer: RunObserver | None, *, worker_id: str) -> None:
        self.observer = observer
        self.worker_id = worker_id
        self._tasks: set[asyncio.Task[None]] = set()

    def attempt_ended(self, run_id: str, attempt: int) -> None:
        if self.observer is not None:
            self._report(self.observer.attempt_ended(run_id, attempt))

    def run_ended(self, run_id: str) -> None:
        """A run this worker ended without executing it (its attempts exhausted)."""
        if self.observer is not None:
            self._report(self.observer.run_ended(run_id))

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wait for the reports under way (up to ``timeout``), then close the observer."""
        if self.observer is None:
            return
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        try:
            await asyncio.wait_for(self.observer.aclose(), timeout)
        except Exception as exc:  # an exporter that cannot flush must not keep the worker alive
            log.warning("worker %s: closing the observer failed: %r", self.worker_id, exc)

    def _report(self, report: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(report, name="outlast-observe")
        self._tasks.add(task)
        task.add_done_callback(self._reported)

    def _reported(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker %s: observer failed: %r", self.worker_id, task.exception())
