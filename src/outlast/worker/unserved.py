"""Runs of a workflow the worker's code lacks: never failed, left for a worker that has it.

CLAIM answers ``unserved`` (and changes nothing) when the run's workflow is not among the
claimer's. Such a run comes from a version whose workers run different code (which
``register_workflows`` refuses while they are live) or from the upgrade-safe lane that every
version reads. Its work-stream entry goes back on the stream (the ``REQUEUE`` script): at once
the first time, since Redis hands a new entry to the reader that has waited longest (not to this
worker, which just read), then with a growing delay, so a worker alone with such runs does not
spin. Until then the entry stays pending here: if the worker dies, XAUTOCLAIM hands it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from outlast.errors import OutlastError
from outlast.store.queue import RunQueue
from outlast.worker.jobs import Lane

log = logging.getLogger("outlast.worker")

#: Runs remembered (how often each came back); forgotten all at once beyond this.
REMEMBERED = 10_000


class UnservedRuns:
    """Leaves runs for other workers, warning once per workflow."""

    def __init__(
        self,
        queue: RunQueue,
        worker_id: str,
        version: str,
        served: tuple[str, ...],
        *,
        first: float,
        most: float,
    ) -> None:
        """``first``: the delay before a run that came back once is put back again (doubling each
        time, up to ``most`` seconds)."""
        self.queue = queue
        self.worker_id = worker_id
        self.version = version
        self.served = served
        self.first = first
        self.most = most
        self._seen: dict[str, int] = {}  # run id -> times it came to this worker
        self._warned: set[str] = set()
        #: Entries pending here until put back: entry id -> (lane, run id, the task doing it).
        self._pending: dict[bytes, tuple[Lane, str, asyncio.Task[None]]] = {}

    def leave(self, lane: Lane, run_id: str, entry_id: bytes | None, workflow: str) -> None:
        """Leave ``run_id`` for another worker (a run found by a takeover scan, with no entry, just
        stays listed in the lease index for the others' scans)."""
        if workflow not in self._warned:
            self._warned.add(workflow)
            log.warning(
                "worker %s (version %s) has no workflow %r in its code (it has %s): leaving its runs "
                "for a worker that has it. Every worker of a version must run the same code; start "
                "this one under another --version", self.worker_id, self.version, workflow,
                ", ".join(self.served) or "none",
            )  # fmt: skip
        if len(self._seen) > REMEMBERED:
            self._seen.clear()
        if entry_id is None or entry_id in self._pending:
            self._seen.setdefault(run_id, 0)  # (known: a takeover scan looks past it)
            return
        seen = self._seen[run_id] = self._seen.get(run_id, 0) + 1
        delay = 0.0 if seen == 1 else min(self.first * 2 ** (seen - 2), self.most)
        task = asyncio.create_task(self._put_back(lane, entry_id, run_id, delay), name="outlast-requeue")
        self._pending[entry_id] = (lane, run_id, task)

    def known(self, run_id: str) -> bool:
        """Whether ``run_id`` came here unserved already (a run's workflow and this worker's code
        never change, so it stays unserved here)."""
        return run_id in self._seen

    async def _put_back(self, lane: Lane, entry_id: bytes, run_id: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self.queue.requeue(lane.stream, entry_id, self.worker_id, run_id)
        except OutlastError as exc:
            log.warning("worker %s: could not put run %s back on the queue: %s", self.worker_id, run_id, exc)
        finally:
            self._pending.pop(entry_id, None)

    async def flush(self) -> None:
        """The worker stops: put back at once what waits for its delay."""
        pending = list(self._pending.items())
        for _, (_, _, task) in pending:
            task.cancel()
        await asyncio.gather(*(task for _, (_, _, task) in pending), return_exceptions=True)
        for entry_id, (lane, run_id, _) in pending:
            with contextlib.suppress(OutlastError):
                await self.queue.requeue(lane.stream, entry_id, self.worker_id, run_id)
