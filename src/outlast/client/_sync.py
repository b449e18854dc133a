"""``Client``: the blocking twin of :class:`AsyncClient`, running it on a private event loop.

One implementation serves both, so the sync client resumes streams exactly like the async one.
Do not use it from inside a running event loop (use ``AsyncClient`` there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

from outlast.client._async import AsyncClient
from outlast.client.models import Run, RunPage
from outlast.events import Event

T = TypeVar("T")


async def _next(agen: AsyncGenerator[Event, None]) -> Event:
    return await agen.__anext__()


class Client:
    """Start, inspect, cancel and stream runs over HTTP (blocking). Options as for AsyncClient."""

    def __init__(self, base_url: str, api_key: str | None = None, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._lock = threading.RLock()  # one loop: calls from several threads take turns
        self._async = AsyncClient(base_url, api_key, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            return self._runner.run(coro)

    def close(self) -> None:
        try:
            self._call(self._async.aclose())
        finally:
            self._runner.close()

    def workflows(self) -> dict[str, Any]:
        return self._call(self._async.workflows())

    def start(
        self,
        workflow: str,
        input: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: str | None = None,
        *,
        wait: float | None = None,
        fairness_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> Run:
        return self._call(
            self._async.start(
                workflow, input, idempotency_key, version, wait=wait, fairness_key=fairness_key,
                max_concurrency=max_concurrency,
            )
        )  # fmt: skip

    def get(self, run_id: str) -> Run:
        return self._call(self._async.get(run_id))

    def cancel(self, run_id: str) -> Run:
        return self._call(self._async.cancel(run_id))

    def send_input(self, run_id: str, key: str, value: Any) -> dict[str, Any]:
        """As :meth:`AsyncClient.send_input`: supply the value a run waits for under ``key``."""
        return self._call(self._async.send_input(run_id, key, value))

    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        return self._call(self._async.list_runs(workflow, status, limit, cursor))

    def trace(self, run_id: str) -> list[dict[str, Any]]:
        return self._call(self._async.trace(run_id))

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        return self._call(self._async.result(run_id, timeout))

    def events(self, run_id: str, after: int = 0, *, follow: bool = True) -> Iterator[Event]:
        """As :meth:`AsyncClient.events`: resumes across dropped connections, each seq once."""
        agen = self._async.events(run_id, after, follow=follow)
        try:
            while True:
                try:
                    event = self._call(_next(agen))
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._call(agen.aclose())
