"""Observability: OpenTelemetry export of runs (:mod:`outlast.observe.otel`, optional) and
structured logs (:mod:`outlast.observe.logs`).

A worker tells its :class:`RunObserver` when an attempt ends; nothing here is imported by the
hot path, and ``opentelemetry`` is imported only when export is configured
(:func:`observer_from_env`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from outlast.store.client import RedisClient


class RunObserver(Protocol):
    """What a worker reports. Calls are made from background tasks: they never delay a run."""

    async def attempt_ended(self, run_id: str, attempt: int) -> None:
        """Attempt ``attempt`` of the run ended here, whatever its outcome (its events are written)."""

    async def run_ended(self, run_id: str) -> None:
        """The run ended without an attempt of this worker (its attempts ran out, say)."""

    async def aclose(self) -> None:
        """Flush what is pending; called once when the worker stops."""


def otel_enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Export is on with ``OUTLAST_OTEL=1`` (or ``console``), or when an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OUTLAST_OTEL=0``
    and ``OTEL_SDK_DISABLED=true`` turn it off."""
    flag = environ.get("OUTLAST_OTEL", "").strip().lower()
    if flag in ("0", "false", "no", "off") or environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(flag) or bool(endpoint)


def observer_from_env(redis: RedisClient, *, retention: float = 7 * 24 * 3600) -> RunObserver | None:
    """The OpenTelemetry exporter the environment asks for, or None (nothing imported)."""
    if not otel_enabled():
        return None
    from outlast.observe.otel import exporter_from_env  # the optional extra: imported only now

    return exporter_from_env(redis, retention=retention)
