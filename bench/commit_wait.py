"""What commit waits (``OUTLAST_COMMIT_WAIT``) cost per durable step, on a master with one replica.

One process, one embedded Valkey master (AOF on) and one replica of it on loopback. For each
setting: a sequential run of no-op steps (each step's commit waits, so its latency is the cost),
and 64 runs at once (their commits share waits: one WAIT per socket write), in steps/s. Beside
them: how long a PING takes on the main multiplexed connection (the one claims and reads use)
while the 64 runs commit, with the waits on their own connection (the default) and on the main
one — a WAIT blocks every command queued behind it on its connection.

WAITAOF's local fsync follows ``appendfsync``: with ``everysec`` (Outlast's default) a wait
lasts until the next once-a-second fsync; the rows marked ``always`` set ``appendfsync always``
on the master and the replica first.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import outlast
from outlast.store.client import RedisClient, multiplexer_of, redis_from_url
from outlast.store.commands import HotPath
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster
from step_overhead import noop, pct

CONCURRENT_RUNS = 64
ROUNDS = 3  # the settings take turns, round after round: a shared host's drift falls on all alike

# label, OUTLAST_COMMIT_WAIT, appendfsync, waits on the main connection,
# sequential steps per round, steps per run of the 64 at once per round
SETTINGS: list[tuple[str, str, str, bool, int, int]] = [
    ("off (default)", "off", "everysec", False, 500, 15),
    ("replicas:1", "replicas:1", "everysec", False, 500, 15),
    ("replicas:1, waits on the main connection", "replicas:1", "everysec", True, 500, 15),
    ("aof (local fsync), everysec", "aof", "everysec", False, 500, 15),
    ("aof (local fsync), always", "aof", "always", False, 200, 15),
    ("aof:1:1 (+ replica's fsync), always", "aof:1:1:1500", "always", False, 3, 1),
]
CLUSTER_SETTINGS: list[tuple[str, str, str, bool, int, int]] = [
    ("off (default)", "off", "everysec", False, 500, 15),
    ("replicas:1", "replicas:1", "everysec", False, 500, 15),
]


@outlast.workflow(name="bench_commit_steps")
async def steps(n: int) -> int:
    for i in range(n):
        await noop(i)
    return n


def timed_workflow(samples: list[float]) -> outlast.Workflow[Any, Any]:
    @outlast.workflow(name="bench_commit_timed")
    async def timed(n: int) -> int:
        for i in range(n):
            t0 = time.perf_counter()
            await noop(i)
            samples.append(time.perf_counter() - t0)
        return n

    return timed


async def pings_until(client: RedisClient, done: asyncio.Event) -> list[float]:
    mux = multiplexer_of(client)
    out = []
    while not done.is_set():
        t0 = time.perf_counter()
        await (client.ping() if mux is None else mux.execute("PING"))  # (a cluster: any master)
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.001)
    return out


class Figures:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.pings: list[float] = []
        self.steps = 0
        self.seconds = 0.0
        self.waits = 0
        self.shortfalls = 0
        self.sent = 0  # WAIT/WAITAOF commands the server received while the 64 runs committed


async def waits_sent(ports: list[int]) -> int:
    total = 0
    for port in ports:
        client = aioredis.Redis(port=port)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        total += sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("wait", "waitaof"))
    return total


async def measure(
    client: RedisClient, setting: tuple[str, str, str, bool, int, int], out: Figures, ports: list[int]
) -> None:
    _, mode, _, shared, sequential, per_run = setting
    store = outlast.RedisStore(client, commit_wait=mode)
    if shared and isinstance(client, aioredis.Redis):
        store.hot = HotPath(client, shared_waits=True)
    runner = outlast.Runner(store)
    samples: list[float] = []
    timed = timed_workflow(samples)
    await runner.run(timed, {"n": 3})  # warm-up
    samples.clear()
    await runner.run(timed, {"n": sequential})
    out.samples += samples
    sent_before = await waits_sent(ports)
    t0 = time.perf_counter()
    done = asyncio.Event()
    pinger = asyncio.create_task(pings_until(client, done))
    await asyncio.gather(*(runner.run(steps, {"n": per_run}) for _ in range(CONCURRENT_RUNS)))
    done.set()
    out.pings += await pinger
    out.seconds += time.perf_counter() - t0
    out.steps += CONCURRENT_RUNS * per_run
    out.sent += await waits_sent(ports) - sent_before
    out.waits += store.commit_wait.waits
    out.shortfalls += store.commit_wait.shortfalls


async def set_fsync(servers: list[EmbeddedServer], value: str) -> None:
    for server in servers:
        client = aioredis.Redis(port=server.port)
        try:
            await client.config_set("appendfsync", value)
        finally:
            await client.aclose()


async def on_one_master(tmp: Path) -> dict[str, Figures]:
    figures = {setting[0]: Figures() for setting in SETTINGS}
    master = EmbeddedServer(tmp / "master").start()
    replica = master.start_replica(tmp / "replica")
    client = redis_from_url(master.url)
    try:
        for _ in range(ROUNDS):
            for setting in SETTINGS:
                await set_fsync([master, replica], setting[2])
                await measure(client, setting, figures[setting[0]], [master.port])
    finally:
        await client.aclose()
        replica.stop()
        master.stop()
    return figures


async def on_a_cluster(tmp: Path) -> dict[str, Figures]:
    figures = {setting[0]: Figures() for setting in CLUSTER_SETTINGS}
    with EmbeddedCluster(tmp / "cluster", masters=3, replicas=1) as cluster:
        client = redis_from_url(cluster.url)
        ports = [node.port for node in cluster.masters]
        try:
            for _ in range(ROUNDS):
                for setting in CLUSTER_SETTINGS:
                    await measure(client, setting, figures[setting[0]], ports)
        finally:
            await client.aclose()
    return figures


def report(title: str, figures: dict[str, Figures], ping: str) -> None:
    print(f"\n== {title} ==")
    head = f"{'OUTLAST_COMMIT_WAIT':<42}{'step p50 µs':>12}{'p99 µs':>10}{'steps/s x64':>13}"
    print(f"{head}{'PING p50 µs':>13}{'p99 µs':>10}{'waits/step x64':>16}")
    for label, f in figures.items():
        rate = f.steps / f.seconds
        line = f"{label:<42}{pct(f.samples, 0.5):>12.0f}{pct(f.samples, 0.99):>10.0f}{rate:>13,.0f}"
        print(f"{line}{pct(f.pings, 0.5):>13.0f}{pct(f.pings, 0.99):>10.0f}{f.sent / f.steps:>16.3f}")
        if f.shortfalls:
            print(f"  ({f.shortfalls} of {f.waits} waits fell short of the target within the timeout)")
    sequential = len(next(iter(figures.values())).samples)
    print(f"step: a no-op component in one run, sequential ({sequential} steps in the first row);")
    print(f"steps/s x64: {CONCURRENT_RUNS} runs at once, their commits sharing waits (run ends included);")
    print("waits/step x64: WAIT/WAITAOF commands the servers received per step in that phase;")
    print(f"PING: {ping} while those 64 runs commit")


async def main() -> None:
    logging.getLogger("outlast.store").setLevel(logging.ERROR)  # shortfalls are counted
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp:
        single = await on_one_master(Path(tmp))
        clustered = await on_a_cluster(Path(tmp))
    title = "commit waits: durable step cost on a master with one replica (loopback, AOF on)"
    report(title, single, "on the main multiplexed connection (claims, reads)")
    title = "commit waits on a cluster: 3 masters with a replica each (loopback, AOF on)"
    report(title, clustered, "through the cluster client (a master)")
