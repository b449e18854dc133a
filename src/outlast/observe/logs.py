"""Structured logs: JSON lines when stderr is not a terminal, readable text when it is.

Every line carries the run id, attempt and worker id of the code that logged it, taken from
context variables: a worker sets the worker id once (the tasks it creates inherit it) and the run
id and attempt in the task executing a run (the workflow's own tasks inherit those), the API sets
the run id of the request it serves. A log line written by a workflow's own code through
:mod:`logging` carries them too, once :func:`configure_logging` installed the handler.

``OUTLAST_LOG_FORMAT`` = ``json`` | ``text`` | ``auto`` (default: JSON unless a TTY);
``OUTLAST_LOG_LEVEL`` (default ``INFO``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, Any, Literal

from outlast.errors import ConfigError

run_id_var: ContextVar[str | None] = ContextVar("outlast_run_id", default=None)
attempt_var: ContextVar[int | None] = ContextVar("outlast_attempt", default=None)
worker_id_var: ContextVar[str | None] = ContextVar("outlast_worker_id", default=None)

LogFormat = Literal["auto", "json", "text"]
_CONTEXT = (("run_id", run_id_var), ("attempt", attempt_var), ("worker_id", worker_id_var))


def bind_run(run_id: str, attempt: int | None = None) -> None:
    """Name the run (and attempt) for every line logged from this context on (a task's own copy)."""
    run_id_var.set(run_id)
    attempt_var.set(attempt)


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record (``record.run_id`` …): any formatter may use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT:
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg``, the run
    context when set, ``exc`` with the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, _var in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger [run=… attempt=… worker=…] message`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(context)s%(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"{label}={value}"
            for label, value in (
                ("run", getattr(record, "run_id", None)),
                ("attempt", getattr(record, "attempt", None)),
                ("worker", getattr(record, "worker_id", None)),
            )
            if value is not None
        ]
        record.context = f"[{' '.join(parts)}] " if parts else ""
        return super().format(record)


def configure_logging(
    fmt: LogFormat | str | None = None, *, level: str | int | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as JSON or text; returns the handler.

    Replaces handlers a previous call installed (not others), so calling it twice is harmless.
    """
    stream = stream or sys.stderr
    fmt = (fmt or os.environ.get("OUTLAST_LOG_FORMAT") or "auto").lower()
    if fmt not in ("auto", "json", "text"):
        raise ConfigError(f"log format {fmt!r}: use json, text or auto (JSON unless stderr is a terminal)")
    if fmt == "auto":
        fmt = "text" if _isatty(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("outlast")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "outlast"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("OUTLAST_LOG_LEVEL", "INFO").upper())
    return handler


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_RUN_PATH = re.compile(r"/v1/runs/([^/]+)")


class RunContextMiddleware:
    """ASGI middleware: the run a request is about (``/v1/runs/<id>/…``) on every line it logs
    (reset afterwards: a server that serves requests one after another in one task leaks nothing)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = _RUN_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        token = run_id_var.set(found.group(1) if found else None)
        try:
            await self.app(scope, receive, send)
        finally:
            run_id_var.reset(token)
