"""Limits on what a client may send, over raw sockets: head size (431), a head or body that
stops arriving (408)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import pytest

from .conftest import Servers
from .support import ApiServer


@pytest.fixture(scope="module")
def strict(servers: Servers) -> Iterator[ApiServer]:
    api = ApiServer(servers.redis_url, max_header_bytes=2048, head_timeout=1.0, body_timeout=1.0)
    try:
        api.proc.wait_ready()
        yield api
    finally:
        api.stop()


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, object], bytes]:
    """Send ``request`` and read until the server closes: (status, JSON body, raw head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(-1), 15)  # read(-1): until the server closes
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), head


async def test_a_head_over_the_limit_is_431(strict: ApiServer) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    status, body, head = await _exchange(strict.port, big)
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"  # type: ignore[index]
    assert body["error"]["details"] == {"max_header_bytes": 2048}  # type: ignore[index]
    assert b"connection: close" in head.lower()
    many = (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(400)) + b"\r\n"
    )
    assert (await _exchange(strict.port, many))[0] == 431
    long_url = b"GET /healthz?" + b"q" * 4000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    assert (await _exchange(strict.port, long_url))[0] == 431
    ok = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Fine: " + b"a" * 1000 + b"\r\nConnection: close\r\n\r\n"
    assert (await _exchange(strict.port, ok))[0] == 200


async def test_an_endless_header_is_cut_off_without_buffering_it(strict: ApiServer) -> None:
    """A header that never ends is answered once it passes the limit, not after the whole of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    sent = 0
    answered_at: int | None = None

    async def read_reply() -> bytes:
        nonlocal answered_at
        first = await reader.read(1)
        answered_at = sent
        return first + await reader.read(-1)

    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        reading = asyncio.ensure_future(read_reply())
        with contextlib.suppress(ConnectionError):
            while answered_at is None and sent < 64 << 20:
                writer.write(b"a" * 4096)
                await writer.drain()
                sent += 4096
                await asyncio.sleep(0)  # let the reader see an answer as soon as it comes
        reply = await asyncio.wait_for(reading, 15)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert answered_at is not None
    assert answered_at < 4 << 20, f"answered only after {answered_at} bytes of one header"


async def test_a_stalled_head_or_body_is_408(strict: ApiServer) -> None:
    status, body, _ = await _exchange(strict.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    assert (status, body["error"]["code"]) == (408, "request_timeout")  # type: ignore[index]
    stalled = (
        b"POST /v1/workflows/noop3/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"'
    )
    status, body, head = await _exchange(strict.port, stalled)
    assert (status, body["error"]["code"]) == (408, "request_timeout")  # type: ignore[index]
    assert "stopped arriving" in body["error"]["message"]  # type: ignore[index]
    assert b"connection: close" in head.lower()
    assert "Traceback" not in strict.proc.output
