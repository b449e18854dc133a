"""``AsyncClient``: the Outlast HTTP API from asyncio code (httpx + httpx-sse)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse

from outlast import serde
from outlast.client.errors import ClientError
from outlast.client.models import Run, RunPage
from outlast.errors import RunFailed, SerializationError
from outlast.events import Event


def error_from(response: httpx.Response) -> ClientError:
    """The API's error body as a ClientError (a non-JSON body, e.g. from a proxy, still maps)."""
    try:
        error = response.json()["error"]
        return ClientError(
            response.status_code, str(error["code"]), str(error["message"]), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        text = response.text[:200] if response.is_stream_consumed else ""
        return ClientError(response.status_code, "http_error", text or response.reason_phrase)


class _Retry(Exception):
    """A server-side failure (5xx) worth reconnecting after."""


class AsyncClient:
    """Start, inspect, cancel and stream runs over HTTP.

    ``timeout``: seconds for an ordinary request. ``stream_timeout``: a stream silent for this long
    (the server sends a keep-alive every 15 s) is treated as dropped and resumed. ``reconnect_for``:
    how long :meth:`events` keeps reconnecting without receiving anything before it gives up.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,
        reconnect_for: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.reconnect_for = reconnect_for
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(0, "unreachable", f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response.json()

    # -- runs -----------------------------------------------------------------------------------

    async def workflows(self) -> dict[str, Any]:
        """The registry: ``{"active_version", "versions", "workflows": [...]}``."""
        return dict(await self._request("GET", "/v1/workflows"))

    async def start(
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
        """Start a run (the input is checked against the workflow's schema: ClientError 422).

        With ``wait``, the server waits up to that many seconds and returns the finished run.
        ``fairness_key`` queues it fairly behind that key (default: your tenant, if any);
        ``max_concurrency`` caps the key's runs in flight across the fleet.
        """
        body: dict[str, Any] = {"input": input or {}}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if version is not None:
            body["version"] = version
        if fairness_key is not None:
            body["fairness_key"] = fairness_key
        if max_concurrency is not None:
            body["max_concurrency"] = max_concurrency
        params = {"wait": wait} if wait is not None else None
        timeout = self.timeout + (wait or 0)
        data = await self._request(
            "POST",
            f"/v1/workflows/{quote(workflow, safe='')}/runs",
            json=body,
            params=params,
            timeout=timeout,
        )
        return Run.model_validate(data)

    async def get(self, run_id: str) -> Run:
        return Run.model_validate(await self._request("GET", f"/v1/runs/{quote(run_id, safe='')}"))

    async def cancel(self, run_id: str) -> Run:
        """Request cancellation; status ``cancelled`` or ``cancelling``. ClientError 409 if it ended."""
        return Run.model_validate(await self._request("POST", f"/v1/runs/{quote(run_id, safe='')}/cancel"))

    async def send_input(self, run_id: str, key: str, value: Any) -> dict[str, Any]:
        """Supply the value a run waits for under ``key`` (``wait_for_input``).

        ``value``: any JSON value (or a pydantic model / dataclass). Returns ``{"run_id", "key",
        "status"}``, status ``resumed`` or ``delivered``. ClientError 422 (``invalid_input``) if it
        fails the wait's schema, 409 (``not_waiting``) if the run waits for no such key.
        """
        try:
            body = json.dumps(serde.to_jsonable(value, f"input {key!r}"), allow_nan=False)
        except ValueError as exc:  # NaN or Infinity: not JSON
            raise SerializationError(f"input {key!r} is not JSON-serialisable: {exc}") from None
        path = f"/v1/runs/{quote(run_id, safe='')}/inputs/{quote(key, safe='')}"
        headers = {"Content-Type": "application/json"}
        return dict(await self._request("POST", path, content=body.encode(), headers=headers))

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first. A page may be short while ``next_cursor`` is set: keep following it."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("workflow", workflow), ("status", status), ("cursor", cursor)):
            if value is not None:
                params[name] = value
        return RunPage.model_validate(await self._request("GET", "/v1/runs", params=params))

    async def trace(self, run_id: str) -> list[dict[str, Any]]:
        data = await self._request("GET", f"/v1/runs/{quote(run_id, safe='')}/trace")
        return list(data["spans"])

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's result once it completes; RunFailed if it fails or is cancelled;
        TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            run = await self.get(run_id)
            if not run.terminal:
                async with contextlib.aclosing(self.events(run_id, after=run.last_seq)) as events:
                    async for event in events:
                        if event.terminal:
                            break
                run = await self.get(run_id)
        if run.status == "completed":
            return run.result
        raise RunFailed(run_id, run.status, run.error)

    # -- streaming ------------------------------------------------------------------------------

    async def events(
        self, run_id: str, after: int = 0, *, follow: bool = True
    ) -> AsyncGenerator[Event, None]:
        """The run's events with seq > ``after``, through the terminal event.

        Dropped connections are resumed with ``Last-Event-ID`` from the last seq received, so
        every seq arrives exactly once however often the connection breaks. ``follow=False``
        returns only the events stored now.
        """
        path = f"/v1/runs/{quote(run_id, safe='')}/events"
        cursor = after
        hint = 2.0  # the server's retry: hint, in seconds, caps the backoff
        delay = 0.05
        giving_up: float | None = None
        while True:
            problem: BaseException
            try:
                headers = {"Last-Event-ID": str(cursor)}
                params = {"after": cursor, "follow": "true" if follow else "false"}
                async with aconnect_sse(
                    self._http, "GET", path, headers=headers, params=params, timeout=self.stream_timeout
                ) as source:
                    response = source.response
                    if response.status_code == 204:  # the run ended at the cursor: nothing to send
                        return
                    if response.status_code >= 400:
                        await response.aread()
                        if response.status_code < 500:
                            raise error_from(response)
                        raise _Retry(str(error_from(response)))
                    async for sse in source.aiter_sse():
                        if sse.retry is not None:
                            hint = max(sse.retry / 1000, 0.01)
                        if not sse.data:
                            continue
                        if sse.event == "error":  # the server gave up on its store: resume later
                            raise _Retry(sse.data)
                        event = Event.model_validate_json(sse.data)
                        if event.seq <= cursor:
                            continue
                        cursor, giving_up, delay = event.seq, None, 0.05
                        yield event
                        if event.terminal:
                            return
                if not follow:
                    return
                problem = ConnectionError("the stream ended before the run did")
            except (httpx.TransportError, SSEError, _Retry) as exc:
                problem = exc
            now = time.monotonic()
            giving_up = giving_up if giving_up is not None else now + self.reconnect_for
            if now >= giving_up:
                raise ClientError(0, "unreachable", f"events of run {run_id}: {problem!r}") from problem
            await asyncio.sleep(min(delay, hint))
            delay *= 2
