"""A real worker and API (with an API key) on a real Valkey, for the browser-client tests.

Used by the browser test as a fixture and, through :mod:`.launcher`, by the client's
``node --test`` suite, which kills and restarts the API through it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import redis as redis_sync

from ..api.support import CLI, ApiServer, Proc, child_env

APP = str(Path(__file__).with_name("app.py"))
#: The API key (tenant ``browser``) every client in these tests uses.
TOKEN = "client-test-key"


class Stack:
    """One worker running :mod:`.app` and one API process on ``redis_url``; ``stop()`` ends them."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        cmd = [sys.executable, "-c", CLI, "worker", APP, "--redis", redis_url,
               "--heartbeat", "0.2", "--lease-timeout", "1", "--concurrency", "50"]  # fmt: skip
        self.worker = Proc(cmd, child_env(redis_url), b"worker ")
        self.api = ApiServer(redis_url, api_keys={TOKEN: "browser"})
        self.redis = redis_sync.Redis.from_url(redis_url)
        try:
            self.worker.wait_ready()
            self.api.proc.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return self.api.base_url

    def restart_api(self) -> None:
        self.api.restart()
        self.api.proc.wait_ready()

    def open_gate(self, gate: str) -> None:
        self.redis.rpush(gate, 1)

    def trim(self, run_id: str, keep: int) -> None:
        """Trim a run's stream to its newest ``keep`` entries: readers behind them get a gap."""
        self.redis.xtrim(f"outlast:run:{{{run_id}}}:events", maxlen=keep, approximate=False)

    def stop(self) -> None:
        for proc in (self.api.proc, self.worker):
            proc.stop()
        self.redis.close()
