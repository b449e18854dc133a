"""uvicorn's httptools protocol, with the limits it lacks on a request's head.

uvicorn reads a request line and headers of any size (a 64 MB header is buffered whole) and for
as long as they take. This protocol answers **431** once a head (request line + headers) passes
``max_head`` bytes, and **408** when a head is still incomplete ``head_timeout`` seconds after its
first byte. Both answers are the API's JSON error shape, and close the connection. (A body that
stops arriving is timed out by :class:`~outlast.api.errors.BodyLimitMiddleware`.)

``outlast api`` (:func:`outlast.cli.api.serve`) runs uvicorn with it; pass
``http=bounded_httptools(...)`` to ``uvicorn.run`` to do the same elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from outlast.api.errors import error_body

DEFAULT_MAX_HEAD = 16 * 1024
DEFAULT_HEAD_TIMEOUT = 30.0
#: Seconds a rejected connection is kept half-open, reading and dropping, before it is closed.
LINGER = 2.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class BoundedHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol with a head size limit and a head timeout (see the module docstring)."""

    max_head = DEFAULT_MAX_HEAD
    head_timeout = DEFAULT_HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # the bytes arriving now belong to a request line or headers
        self._head_bytes = 0  # raw bytes received while in a head (a guard while it is incomplete)
        self._head_size = 0  # exact bytes of the URL and headers parsed so far
        self._head_timer: asyncio.TimerHandle | None = None
        self._too_large = False
        self._discarding = False  # answered and closing: what still arrives is dropped unread

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
        super().data_received(data)
        # A head still incomplete after more than max_head bytes: httptools keeps buffering a
        # header until it ends, so stop here rather than after the whole of it.
        if self._in_head and self._head_bytes > self.max_head and not self.transport.is_closing():
            self._reject_too_large()

    # -- parser callbacks ---------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_size = True, 0, 0  # the next request's head

    def send_400_response(self, msg: str) -> None:
        if self._too_large:  # the parser stopped because _count raised
            self._reject_too_large()
        else:
            super().send_400_response(msg)

    # -- limits -------------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_head:
            self._too_large = True
            raise _HeadTooLarge

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.logger.warning(
                "request head incomplete after %gs: closing the connection", self.head_timeout
            )
            self._reject(408, "request_timeout", f"the request head took over {self.head_timeout:g} s")

    def _reject_too_large(self) -> None:
        self.logger.warning("request head over %d bytes: answered 431", self.max_head)
        message = f"the request line and headers are over the limit of {self.max_head} bytes"
        self._reject(431, "headers_too_large", message, {"max_header_bytes": self.max_head})

    def _reject(self, status: int, code: str, message: str, details: Any = None) -> None:
        body = json.dumps(error_body(code, message, details)).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        # A lingering close: closing with unread data makes the kernel answer RST, and a client
        # still sending (the endless header) would lose the answer. Send FIN, drop what still
        # arrives, and close after LINGER seconds.
        self._in_head, self._discarding = False, True
        self._stop_head_timer()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def bounded_httptools(
    max_head: int = DEFAULT_MAX_HEAD, head_timeout: float = DEFAULT_HEAD_TIMEOUT
) -> type[BoundedHttpTools]:
    """A :class:`BoundedHttpTools` class with these limits, for uvicorn's ``http=`` option."""
    if max_head < 256 or head_timeout <= 0:
        raise ValueError("need max_head >= 256 bytes and head_timeout > 0")
    return type("BoundedHttpTools", (BoundedHttpTools,), {"max_head": max_head, "head_timeout": head_timeout})
