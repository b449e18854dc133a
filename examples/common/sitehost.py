"""A static fixture website on a loopback port, served from a thread, logging every request.

A site is a mapping of path → :class:`Page`. A missing path is a 404; a page with ``delay`` is
sent after sleeping that long (a slow page). :attr:`SiteHost.log` records each request as it
*arrives*, so tests can assert how often a page was fetched.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Page:
    html: str
    delay: float = 0.0
    content_type: str = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Hit:
    path: str
    status: int
    at: float


class SiteHost:
    """Serves ``pages`` on ``http://127.0.0.1:<port>``; use as a context manager."""

    def __init__(self, pages: Mapping[str, Page], host: str = "127.0.0.1", port: int = 0) -> None:
        self.pages = dict(pages)
        self._lock = threading.Lock()
        self._log: list[Hit] = []
        self._stopping = threading.Event()
        host_ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host_ref._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the log is ours
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that went away (a killed worker, a timed-out fetch) is not our error.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._server = Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        page = self.pages.get(path)
        status = 200 if page is not None else 404
        with self._lock:
            self._log.append(Hit(path, status, time.time()))
        if page is not None and page.delay:
            self._stopping.wait(page.delay)
        body = (page.html if page is not None else "<!doctype html><title>Not found</title>").encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", page.content_type if page else "text/html; charset=utf-8")
            handler.send_header("content-length", str(len(body)))
            # One request per connection: a client never reuses a connection this thread has let go.
            handler.send_header("connection", "close")
            handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:  # the client gave up (a timeout, a killed worker): nothing to tell it
            handler.close_connection = True

    def log(self) -> list[Hit]:
        with self._lock:
            return list(self._log)

    def fetch_counts(self) -> Counter[str]:
        """How often each path was requested."""
        return Counter(hit.path for hit in self.log())

    def start(self) -> SiteHost:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fixture-site", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SiteHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
