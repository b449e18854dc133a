"""Soak: long runs while workers are SIGKILLed and the API restarted, then check every guarantee.

    python chaos/soak.py                 # a few minutes (make chaos)
    python chaos/soak.py --minutes 60    # the hour

A private Valkey (AOF on), ``--workers`` worker processes, one API process. Each run is
``chaos_app.long_run``: phases of work steps and a streamed step, a durable sleep between
phases, sized to last about ``--minutes``. Every ``--kill-every`` seconds one worker is SIGKILLed
and replaced; every ``--api-every`` seconds the API is SIGKILLed and started again. One SSE
reader per run follows it through the API, resuming with ``?after=`` after each cut. At the end:
every run completed; every reader saw seq 1..N exactly once and the same events as the store; no
step body started after its step had committed. Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent
CLI = "from outlast.cli.main import main; main()"
HEARTBEAT, LEASE = "0.5", "2"
STEP_SECONDS, STEPS, NAP = 1.0, 4, 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reader:
    """One run's SSE reader: what it received, in order, across reconnects."""

    run_id: str
    seqs: list[int] = field(default_factory=list)
    types: dict[int, str] = field(default_factory=dict)
    resumed: int = 0  # streams that broke (API killed) and were read on from the last seq
    refused: int = 0  # connection attempts while the API was down
    done: bool = False


class Fleet:
    def __init__(self, url: str, log_dir: Path, workers: int, max_attempts: int) -> None:
        self.url = url
        self.log_dir = log_dir
        self.size = workers
        self.max_attempts = max_attempts
        self.workers: list[asyncio.subprocess.Process] = []
        self.api: asyncio.subprocess.Process | None = None
        self.api_port = free_port()
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(HERE)) if p)
        self.env = {**os.environ, "CHAOS_REDIS_URL": url, "PYTHONPATH": path}
        self.spawned = 0
        self.kills = 0
        self.api_restarts = 0

    async def _spawn(self, *args: str, ready: bytes | None) -> asyncio.subprocess.Process:
        """Start an ``outlast`` command; with ``ready``, wait until it prints a line starting so."""
        self.spawned += 1
        path = self.log_dir / f"{args[0]}-{self.spawned}.log"
        with path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLI, *args, "--redis", self.url,
                stdout=asyncio.subprocess.PIPE if ready else log, stderr=log, env=self.env, cwd=HERE,
            )  # fmt: skip
        if ready is not None:
            assert proc.stdout is not None
            while not (line := await asyncio.wait_for(proc.stdout.readline(), 60)).startswith(ready):
                if not line:
                    raise RuntimeError(f"{args[0]} exited at start: see {path}")
        return proc

    async def add_worker(self) -> None:
        args = ["--heartbeat", HEARTBEAT, "--lease-timeout", LEASE, "--max-attempts", str(self.max_attempts)]
        self.workers.append(await self._spawn("worker", str(HERE / "chaos_app.py"), *args, ready=b"worker "))

    async def start_api(self) -> None:
        port = str(self.api_port)
        self.api = await self._spawn("api", "--port", port, "--log-level", "warning", ready=None)
        async with httpx.AsyncClient() as client:  # up once it answers
            for _ in range(600):
                try:
                    if (await client.get(f"{self.api_base}/healthz")).status_code < 500:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the API did not come up")

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def kill_a_worker(self) -> None:
        victim = self.workers.pop(random.randrange(len(self.workers)))
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        self.kills += 1
        await self.add_worker()

    async def restart_api(self) -> None:
        if self.api is not None:
            self.api.send_signal(signal.SIGKILL)
            await self.api.wait()
        self.api_restarts += 1
        await self.start_api()

    async def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()


async def read(fleet: Fleet, reader: Reader) -> None:
    """Follow a run over SSE, resuming after the last seq received whenever the stream breaks."""
    after = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
        while not reader.done:
            connected = False
            try:
                url = f"{fleet.api_base}/v1/runs/{reader.run_id}/events"
                async with client.stream("GET", url, params={"after": after}) as response:
                    if response.status_code != 200:
                        raise httpx.TransportError(f"status {response.status_code}")
                    connected = True
                    data = ""
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data:
                            event = json.loads(data)
                            data = ""
                            reader.seqs.append(event["seq"])
                            reader.types[event["seq"]] = event["type"]
                            after = event["seq"]
                            if event["type"] in ev.TERMINAL_TYPES:
                                reader.done = True
                                return
            except (httpx.TransportError, httpx.StreamError):
                pass
            if connected:
                reader.resumed += 1
            else:
                reader.refused += 1
            await asyncio.sleep(0.2)


async def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="outlast-chaos-"))
    server = EmbeddedServer(tmp / "valkey")
    server.start()
    redis = redis_from_url(server.url)
    dispatcher = Dispatcher(redis)
    fleet = Fleet(server.url, tmp, args.workers, args.max_attempts)
    began = time.monotonic()
    try:
        await asyncio.gather(*(fleet.add_worker() for _ in range(args.workers)))
        await fleet.start_api()
        per_phase = STEPS * STEP_SECONDS + STEP_SECONDS + NAP
        phases = max(2, int(args.minutes * 60 / per_phase))
        runs = [
            (await dispatcher.start("long_run", {
                "tag": f"r{n}", "phases": phases, "steps": STEPS, "step_seconds": STEP_SECONDS, "nap": NAP,
            })).run_id
            for n in range(args.runs)
        ]  # fmt: skip
        readers = [Reader(run_id) for run_id in runs]
        reading = [asyncio.create_task(read(fleet, r)) for r in readers]
        print(f"soak: {args.runs} runs of {phases} phases, {args.workers} workers, for ~{args.minutes} min")
        print(f"      a worker SIGKILLed every {args.kill_every}s, the API every {args.api_every}s")
        print(f"      logs in {tmp}")
        deadline = began + args.minutes * 60
        next_kill, next_api = began + args.kill_every, began + args.api_every
        while not all(r.done for r in readers) and time.monotonic() < deadline + args.minutes * 60 + 120:
            now = time.monotonic()
            if now < deadline and now >= next_kill:
                await fleet.kill_a_worker()
                next_kill = now + args.kill_every
            if now < deadline and now >= next_api:
                await fleet.restart_api()
                next_api = now + args.api_every
            await asyncio.sleep(0.2)
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        return await check(dispatcher, readers, fleet, time.monotonic() - began)
    finally:
        await fleet.stop()
        await dispatcher.aclose()
        await redis.aclose()
        server.stop()


async def check(dispatcher: Dispatcher, readers: list[Reader], fleet: Fleet, took: float) -> int:
    problems: list[str] = []
    events_total = resumes = losses = max_losses = 0
    statuses: Counter[str] = Counter()
    for reader in readers:
        record = await dispatcher.store.get_run(reader.run_id)
        statuses[str(record.status)] += 1
        if record.status != "completed":
            problems.append(f"{reader.run_id}: {record.status} {record.error}")
        stored = [e async for e in dispatcher.store.read_events(reader.run_id, follow=False)]
        events_total += len(stored)
        if [e.seq for e in stored] != list(range(1, len(stored) + 1)):
            problems.append(f"{reader.run_id}: the stored stream is not seq 1..N")
        if reader.seqs != list(range(1, len(reader.seqs) + 1)) or len(reader.seqs) != len(stored):
            dupes = [s for s, n in Counter(reader.seqs).items() if n > 1]
            problems.append(
                f"{reader.run_id}: the reader saw {len(reader.seqs)} events for {len(stored)} stored "
                f"(duplicates {dupes[:5]})"
            )
        elif any(reader.types[e.seq] != e.type for e in stored):
            problems.append(f"{reader.run_id}: the reader saw other events than the store holds")
        resumes += record.resumes
        lost = len(record.lost_workers.split(",")) if record.lost_workers else 0
        losses += lost
        max_losses = max(max_losses, lost)
        committed = Counter(e.step for e in stored if e.type == ev.STEP_COMPLETED)
        if any(n != 1 for n in committed.values()):
            problems.append(f"{reader.run_id}: a step completed twice")
        for e in stored:
            if e.type != ev.STEP_COMPLETED:
                continue
            starts = await dispatcher.redis.lrange(f"chaos:starts:{_key_of(e)}", 0, -1)
            late = [float(s) for s in starts if float(s) > e.ts]
            if late:
                problems.append(f"{reader.run_id}: step {e.step} ran again after it committed")
    print(f"took {took / 60:.1f} min: {len(readers)} runs {dict(statuses)}, {events_total} events")
    print(
        f"  {fleet.kills} workers SIGKILLed, {fleet.api_restarts} API restarts; the runs lost their worker "
        f"{losses} times (up to {max_losses} in one run) and resumed {resumes} times after durable sleeps"
    )
    resumed, refused = sum(r.resumed for r in readers), sum(r.refused for r in readers)
    print(
        f"  readers: {resumed} streams resumed after a cut ({refused} refused connections while the "
        f"API was down); every seq once: {not any('reader' in p for p in problems)}"
    )
    print(f"  step bodies run after their commit: {sum('after it committed' in p for p in problems)}")
    for problem in problems:
        print("  FAIL", problem)
    print("soak: OK" if not problems else f"soak: {len(problems)} problems")
    return 1 if problems else 0


def _key_of(event: ev.Event) -> str:
    """The key a step body recorded its starts under (its first argument, in the result or id)."""
    result = event.data["result"]
    if event.data["name"] == "work":
        return str(result)
    return str(result).split(":0 ", 1)[0]  # speak: its text starts with "<key>:0 "


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the chaos lasts")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=12.0, help="seconds between worker SIGKILLs")
    parser.add_argument("--api-every", type=float, default=30.0, help="seconds between API restarts")
    parser.add_argument("--max-attempts", type=int, default=5)
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
