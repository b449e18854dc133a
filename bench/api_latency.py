"""API plane: start→result over HTTP, worker→SSE event latency, and concurrent SSE readers.

Everything is real and local: embedded Valkey (AOF on), one worker process running the
workflows below (this file is the worker's app), one uvicorn API process (access log off), and
the clients in this process. Event latency is the reader's receive time minus the envelope's
``ts`` (taken by the worker when the event was queued): same host, same clock. SSE readers are
raw asyncio sockets so the client's own cost stays small next to what is measured. Runs watched
by the readers wait at a gate (a Redis list) until every reader is connected, so only live
events are timed. Baselines on the same stack calibrate the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import outlast

HERE = Path(__file__).resolve()
WAIT_SAMPLES = 300
READERS_PER_RUN = 20
READER_STEPS = (100, 250, 500, 1000, 2000)
TRIALS = 3
TERMINAL = ("run.completed", "run.failed", "run.cancelled")


@outlast.component
async def noop(i: int) -> int:
    return i


@outlast.component
async def wait_gate(gate: str) -> None:
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(os.environ["OUTLAST_REDIS_URL"]) as client:
        await client.blpop([gate], timeout=120)


@outlast.workflow(name="bench_api_noop3")
async def noop3() -> int:
    for i in range(3):
        await noop(i)
    return 3


@outlast.workflow(name="bench_api_emit")
async def emit(n: int, interval: float, gate: str = "", phase: float = 0.0) -> int:
    """``n`` custom events, one every ``interval`` seconds (after ``gate`` opens and ``phase`` s)."""
    if gate:
        await wait_gate(gate)
    start = time.perf_counter() + phase
    for i in range(n):
        outlast.emit("tick", i)
        # Pace against the clock, not by accumulating sleeps (each sleep overshoots).
        await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.perf_counter()))
    return n


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _spawn(cmd: list[str], url: str, ready: bytes) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OUTLAST_REDIS_URL": url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            break
    else:
        raise RuntimeError(f"{cmd[3:5]} did not start")
    asyncio.get_running_loop().run_in_executor(None, proc.stdout.read)  # keep the pipe drained
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def sse_reader(
    port: int, run_id: str, timed: list[tuple[float, float]], connected: asyncio.Event
) -> int:
    """A minimal SSE client: one GET, then ``data:`` lines. Records (receive time, latency) of each
    custom event; returns the number of events received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(request.encode())
    received = 0
    try:
        while line := await reader.readline():
            if not line.startswith(b"data: "):
                continue
            now = time.time()
            event = json.loads(line[6:])
            received += 1
            if event["type"] == "step.started":
                connected.set()  # the run waits at its gate: history is read, the tail begins
            if event["type"] == "custom":
                timed.append((now, now - event["ts"]))
            if event["type"] in TERMINAL:
                break
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return received


async def _timed(call: Any, n: int, warmup: int = 20) -> list[float]:
    samples = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        await call()
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


async def main() -> None:
    import httpx
    import redis.asyncio as aioredis

    from outlast.store.embedded import EmbeddedServer, free_port

    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp, EmbeddedServer(tmp) as server:
        url = server.url
        worker_cmd = [sys.executable, "-c", "from outlast.cli.main import main; main()", "worker", str(HERE),
                      "--redis", url, "--concurrency", "500"]  # fmt: skip
        worker = _spawn(worker_cmd, url, b"worker ")
        port = free_port()
        launch = (
            f"import sys; from outlast.cli.api import serve; serve(sys.argv[1], port={port}, access_log=0)"
        )
        api = _spawn([sys.executable, "-c", launch, url], url, b"Uvicorn running on")
        limits = httpx.Limits(max_connections=None)
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as http,
                aioredis.Redis.from_url(url) as redis,
            ):
                ping = await _timed(redis.ping, 1000)
                not_found = await _timed(lambda: http.get("/nothing-here"), 300)
                wait = await _timed(_start_and_wait(http), WAIT_SAMPLES)
                raw_wait = await _raw_start_and_wait(port)
                # This host is noisy (a shared 2-core VM): the latency and reader steps run TRIALS
                # times each and the verdict uses the median trial's p99; every trial is printed.
                latency_trials = [await _event_latency(http, redis, port, t) for t in range(TRIALS)]
                events = sorted(latency_trials, key=lambda r: pct(r[1], 0.99))[TRIALS // 2]
                trials = {
                    n: [await _readers(http, redis, port, n) for _ in range(TRIALS)] for n in READER_STEPS
                }
                readers = [sorted(t, key=lambda r: pct(r[4], 0.99))[TRIALS // 2] for t in trials.values()]
                extra = [
                    await _readers(http, redis, port, 1000, rate=2.0),
                    await _readers(http, redis, port, 1000, per_run=1000, rate=2.0),
                ]
        finally:
            _stop(api)
            _stop(worker)

    print("\n== API plane (1 uvicorn process, 1 worker process, embedded Valkey) ==")
    print(f"{'measurement':<62}{'p50 ms':>9}{'p99 ms':>9}")
    rows: list[tuple[str, list[float]]] = [
        ("baseline: Redis PING from asyncio redis-py", ping),
        ("baseline: HTTP round trip to the API (a 404, httpx)", not_found),
        (f"start→result, 3-step no-op, POST ?wait= ({WAIT_SAMPLES} sequential)", raw_wait),
        ("  the same through httpx (its own cost in; see the 404 row)", wait),
        (f"worker→SSE client event latency at {events[0]:,.0f} events/s (median trial)", events[1]),
    ]
    for label, samples in rows:
        print(f"{label:<62}{pct(samples, 0.5):>9.2f}{pct(samples, 0.99):>9.2f}")
    for n, runs, per_s, connects, lat in [*readers, *extra]:
        label = f"{n:>5} SSE readers on {runs:>3} run(s), {per_s:,.0f} deliveries/s"
        print(f"{label:<62}{pct(lat, 0.5):>9.2f}{pct(lat, 0.99):>9.2f}   ({connects:,.0f} connects/s)")
    shown = ", ".join(f"{pct(lat, 0.99):.1f}" for _, lat in latency_trials)
    print(f"  worker→SSE latency, p99 ms of each trial: {shown}")
    for n, runs_ in trials.items():
        shown = ", ".join(f"{pct(r[4], 0.99):.1f}" for r in runs_)
        print(f"  {n:>5} readers at 10 events/s each, p99 ms of each trial: {shown}")
    ok = [n for n, _, _, _, lat in readers if pct(lat, 0.99) < 50]
    slow_p99 = pct(extra[0][4], 0.99)
    print(f"SSE readers one API process sustains with p99 < 50 ms (median of {TRIALS} trials): "
          f"{max(ok) if ok else 'none'} at 10 "
          f"events/s each (tried {', '.join(map(str, READER_STEPS))}); 1000 at 2 events/s each: p99 "
          f"{slow_p99:.1f} ms ({READERS_PER_RUN} readers per run; steady state)")  # fmt: skip


def _start_and_wait(http: Any) -> Any:
    async def call() -> None:
        response = await http.post("/v1/workflows/bench_api_noop3/runs", params={"wait": 10}, json={})
        if response.status_code != 200 or response.json()["status"] != "completed":
            raise RuntimeError(f"start→result failed: {response.text}")

    return call


async def _raw_start_and_wait(port: int) -> list[float]:
    """POST ?wait= over one keep-alive socket, as the SSE readers read (and as wrk would): the
    client's own cost stays out of what is measured. httpx, pure-Python HTTP on this 2-core host,
    spends 1-4 ms a request competing for the cores with the API, the worker and Valkey; its row
    is printed too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/workflows/bench_api_noop3/runs?wait=10 HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )

    async def call() -> None:
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        if b" 200 " not in status or b'"status":"completed"' not in body:
            raise RuntimeError(f"start→result failed: {status!r} {body[:200]!r}")

    try:
        return await _timed(call, WAIT_SAMPLES)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _event_latency(http: Any, redis: Any, port: int, trial: int) -> tuple[float, list[float]]:
    """One reader on a run emitting 3,000 events at 1 ms intervals. The run waits at a gate until
    the reader is connected, so only live events are timed (not the ones stored before it came)."""
    n, interval = 3000, 0.001
    gate = f"bench:gate:latency:{trial}"
    body = {"input": {"n": n, "interval": interval, "gate": gate}}
    run = (await http.post("/v1/workflows/bench_api_emit/runs", json=body)).json()
    timed: list[tuple[float, float]] = []
    connected = asyncio.Event()
    reading = asyncio.create_task(sse_reader(port, run["run_id"], timed, connected))
    await asyncio.wait_for(connected.wait(), 30)
    await redis.rpush(gate, 1)
    t0 = time.perf_counter()
    await reading
    return n / (time.perf_counter() - t0), [latency for _, latency in timed]


async def _readers(
    http: Any, redis: Any, port: int, n: int, per_run: int = READERS_PER_RUN, rate: float = 10.0
) -> tuple[int, int, float, float, list[float]]:
    """``n`` readers, ``per_run`` on each run; once all are connected every run emits at ``rate``/s
    for 5 s (at least 20 events). Only the steady state counts: the first second is dropped."""
    runs = max(1, n // per_run)
    events, interval = max(20, int(5 * rate)), 1 / rate
    gate = f"bench:gate:{n}:{per_run}:{rate}"
    # Runs are spread evenly over one interval: independent runs do not emit in lockstep.
    bodies = [{"input": {"n": events, "interval": interval, "gate": gate, "phase": i * interval / runs}}
              for i in range(runs)]  # fmt: skip
    started = await asyncio.gather(*(http.post("/v1/workflows/bench_api_emit/runs", json=b) for b in bodies))
    run_ids = [r.json()["run_id"] for r in started]
    timed: list[tuple[float, float]] = []
    connected = [asyncio.Event() for _ in range(n)]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(sse_reader(port, run_ids[i % runs], timed, connected[i])) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), 120)
    connect_rate = n / (time.perf_counter() - t0)
    await asyncio.sleep(0.5)  # the last readers attach to their run's feed (two round trips)
    await redis.rpush(gate, *range(runs))  # every run starts now
    opened = time.time()
    got = await asyncio.wait_for(asyncio.gather(*tasks), 300)
    if not all(g >= events for g in got):
        raise RuntimeError("a reader missed events")
    # The gate releases every run at once (a burst independent runs would not make): skip it.
    return n, runs, n / interval, connect_rate, [latency for at, latency in timed if at > opened + 1.0]


if __name__ == "__main__":
    asyncio.run(main())
