"""``GET /v1/runs`` for a tenant with 3 runs among ~900 of another tenant (newer than its own).

Real parts: embedded Valkey, one uvicorn API process (access log off), runs recorded by the real
``START`` script (their version has no worker, so they stay queued). Prints the p50/p99 of the
tenant's first page, and the open-mode listing of the same index as a baseline. Run it on two
checkouts to compare them: ``python bench/tenant_list.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time

import httpx

from outlast.store.base import NewRun
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer, free_port
from outlast.store.queue import RunQueue

SAMPLES = 300
FOREIGN = 900


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def timed(http: httpx.AsyncClient, headers: dict[str, str]) -> list[float]:
    samples = []
    for i in range(SAMPLES + 20):
        t0 = time.perf_counter()
        response = await http.get("/v1/runs", params={"limit": 50}, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(response.text)
        if i >= 20:
            samples.append(time.perf_counter() - t0)
    return samples


def spawn_api(url: str, port: int) -> subprocess.Popen[bytes]:
    launch = (
        "import sys; from outlast.cli.api import serve; "
        f"serve(sys.argv[1], port={port}, access_log=False, api_keys={{'k': 'mine'}})"
    )
    api = subprocess.Popen([sys.executable, "-c", launch, url], stderr=subprocess.PIPE)
    assert api.stderr is not None
    for line in api.stderr:
        if b"Uvicorn running on" in line:
            break
    return api


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        redis = redis_from_url(server.url)
        queue = RunQueue(redis)
        for i in range(3):
            await queue.enqueue(
                NewRun(f"mine-{i}", "w", {}, version="nobody", tenant="mine"), b"{}", "nobody"
            )
            for j in range(FOREIGN // 3):
                run = NewRun(f"other-{i}-{j}", "w", {}, version="nobody", tenant="other")
                await queue.enqueue(run, b"{}", "nobody")
        await redis.aclose()
        port = free_port()
        api = spawn_api(server.url, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                tenant = await timed(http, {"Authorization": "Bearer k"})
        finally:
            api.terminate()
            api.wait(15)
    print(f"\n== GET /v1/runs of a tenant with 3 runs among {FOREIGN} of another ({SAMPLES} sequential) ==")
    print(f"p50 {pct(tenant, 0.5):.2f} ms   p99 {pct(tenant, 0.99):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
