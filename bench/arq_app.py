"""The arq baseline: an equivalent one-step job on the same Valkey."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings


async def one_step(ctx: dict[str, Any], i: int) -> int:
    return i


class WorkerSettings:
    functions = [one_step]  # noqa: RUF012 - arq reads class attributes
    redis_settings = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    max_jobs = 100
    poll_delay = float(os.environ.get("ARQ_POLL_DELAY", "0.5"))
    keep_result = 60
