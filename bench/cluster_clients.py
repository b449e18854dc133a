"""The cluster client A/B (issue #20): valkey-glide vs redis-py's ``RedisCluster`` on one local
3-master Valkey cluster, with Outlast's single-node multiplexed client as the reference line.

Every call is what Outlast's hot path sends: one EVALSHA of a small script touching three keys
of one ``{run}`` slot (a fence check, HINCRBY of the sequence, XADD of the event, like a step
append), spread round-robin over 4,096 run ids, i.e. over all three masters. Measured: latency
at concurrency 1, calls/s at 64 and 256 concurrent tasks, calls/s of batches of 100 (glide's
non-atomic ``ClusterBatch``, redis-py's ``ClusterPipeline``), and this process's CPU per call
(all its threads: glide's Rust core runs in threads of the calling process). Every variant runs
once per round, in a rotated order, and the medians of the rounds are printed: the shared VM's
noise falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glide import (
    Batch,
    ClusterBatch,
    GlideClient,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    Logger,
    LogLevel,
    NodeAddress,
    Script,
)
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from outlast.store.client import multiplexer_of, redis_from_url, register_script
from outlast.store.commands import HotPath
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from worker_throughput import pct  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RUN_IDS = 4096
SERIAL_CALLS = 1000  # per round, concurrency 1
SECONDS = 1.0  # per round, each concurrent / batched variant
BATCH = 100
PAYLOAD = '{"type":"step_completed","step":"s1","data":{"ok":true,"n":12345}}'
APPEND = """
local lease = redis.call('GET', KEYS[1])
if lease and lease ~= ARGV[1] then return redis.error_reply('FENCED') end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '32', '*', 'seq', seq, 'e', ARGV[2])
return seq
"""
KEYS = [[f"bench:{{r{i}}}:lease", f"bench:{{r{i}}}:meta", f"bench:{{r{i}}}:events"] for i in range(RUN_IDS)]


def node_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the server processes (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass
class Variant:
    """One client: ``call(i)`` appends to run ``i``; ``batch(ids)`` appends to each in one batch."""

    label: str
    call: Callable[[int], Awaitable[Any]]
    batch: Callable[[list[int]], Awaitable[list[Any]]]
    server_pids: list[int]
    results: dict[str, list[float]] = field(default_factory=dict)

    def record(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.results[name])


async def glide_cluster(cluster: EmbeddedCluster) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    nodes = [NodeAddress("127.0.0.1", node.port) for node in cluster.masters]
    client = await GlideClusterClient.create(GlideClusterClientConfiguration(nodes))
    script = Script(APPEND)

    async def call(i: int) -> Any:
        return await client.invoke_script(script, keys=KEYS[i % RUN_IDS], args=["", PAYLOAD])

    async def batch(ids: list[int]) -> list[Any]:
        pipe = ClusterBatch(is_atomic=False)  # non-atomic: split per node, sent at once
        for i in ids:
            pipe.custom_command(["EVALSHA", script.get_hash(), "3", *KEYS[i % RUN_IDS], "", PAYLOAD])
        return await client.exec(pipe, raise_on_error=True) or []

    pids = [node.process.pid for node in cluster.masters if node.process]
    return Variant("valkey-glide GlideClusterClient", call, batch, pids), client.close


async def redispy_cluster(cluster: EmbeddedCluster) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in cluster.masters])
    await client.initialize()
    sha = await client.script_load(APPEND)  # on every master

    async def call(i: int) -> Any:
        return await client.evalsha(sha, 3, *KEYS[i % RUN_IDS], "", PAYLOAD)

    async def batch(ids: list[int]) -> list[Any]:
        pipe = client.pipeline()  # ClusterPipeline: grouped per node, one round trip to each
        for i in ids:
            # (its evalsha() method is refused in a cluster pipeline; the command itself is routed)
            pipe.execute_command("EVALSHA", sha, 3, *KEYS[i % RUN_IDS], "", PAYLOAD)
        return await pipe.execute()

    pids = [node.process.pid for node in cluster.masters if node.process]
    return Variant("redis-py RedisCluster", call, batch, pids), client.aclose


async def outlast_mux(server: EmbeddedServer) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    client = redis_from_url(server.url)
    sha = await client.script_load(APPEND)
    mux = multiplexer_of(client)
    assert mux is not None

    async def call(i: int) -> Any:  # as HotPath.script sends it
        return await mux.execute("EVALSHA", sha, 3, *KEYS[i % RUN_IDS], "", PAYLOAD)

    async def batch(ids: list[int]) -> list[Any]:  # calls made in one loop turn share one write
        return await asyncio.gather(*(call(i) for i in ids))

    pids = [server.process.pid] if server.process else []
    return Variant("outlast multiplexed (1 node, ref.)", call, batch, pids), client.aclose


async def mux_per_node(cluster: EmbeddedCluster) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    """Not a client Outlast has: the other option the issue names, our multiplexed connection
    per master, a call routed by its first key's slot (the slot map read once; no MOVED handling)."""
    clients = {node.port: redis_from_url(node.url) for node in cluster.masters}
    muxes = {port: multiplexer_of(client) for port, client in clients.items()}
    owner: list[Any] = [None] * 16384
    for low, high, master, *_ in await next(iter(clients.values())).execute_command("CLUSTER", "SLOTS"):
        owner[low : high + 1] = [muxes[int(master[1])]] * (high - low + 1)
    routes = [owner[key_slot(keys[0].encode())] for keys in KEYS]
    sha = ""
    for client in clients.values():
        sha = await client.script_load(APPEND)

    async def call(i: int) -> Any:
        keys = KEYS[i % RUN_IDS]
        return await routes[i % RUN_IDS].execute("EVALSHA", sha, 3, *keys, "", PAYLOAD)

    async def batch(ids: list[int]) -> list[Any]:
        return await asyncio.gather(*(call(i) for i in ids))

    async def close() -> None:
        for client in clients.values():
            await client.aclose()

    pids = [node.process.pid for node in cluster.masters if node.process]
    return Variant("outlast multiplexed, one per master", call, batch, pids), close


async def outlast_cluster(cluster: EmbeddedCluster) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    """What Outlast's store does on a cluster: HotPath.script over ``redis_from_url(cluster URL)``
    (per-master multiplexers when this build has them, else redis-py's RedisCluster)."""
    client = redis_from_url(cluster.url)
    hot = HotPath(client)
    script = register_script(client, APPEND)

    async def call(i: int) -> Any:
        return await hot.script(script, KEYS[i % RUN_IDS], ["", PAYLOAD])

    async def batch(ids: list[int]) -> list[Any]:
        return await asyncio.gather(*(call(i) for i in ids))

    pids = [node.process.pid for node in cluster.masters if node.process]
    how = "mux per master" if multiplexer_of(client) is not None else "RedisCluster"
    return Variant(f"outlast HotPath, cluster ({how})", call, batch, pids), client.aclose


async def glide_single(server: EmbeddedServer) -> tuple[Variant, Callable[[], Awaitable[None]]]:
    client = await GlideClient.create(GlideClientConfiguration([NodeAddress("127.0.0.1", server.port)]))
    script = Script(APPEND)

    async def call(i: int) -> Any:
        return await client.invoke_script(script, keys=KEYS[i % RUN_IDS], args=["", PAYLOAD])

    async def batch(ids: list[int]) -> list[Any]:
        pipe = Batch(is_atomic=False)
        for i in ids:
            pipe.custom_command(["EVALSHA", script.get_hash(), "3", *KEYS[i % RUN_IDS], "", PAYLOAD])
        return await client.exec(pipe, raise_on_error=True) or []

    pids = [server.process.pid] if server.process else []
    return Variant("valkey-glide GlideClient (1 node, ref.)", call, batch, pids), client.close


async def serial(v: Variant) -> None:
    latencies = []
    for i in range(SERIAL_CALLS):
        t0 = time.perf_counter()
        await v.call(i)
        latencies.append(time.perf_counter() - t0)
    v.record("p50", pct(latencies, 0.5))
    v.record("p99", pct(latencies, 0.99))


async def concurrent(v: Variant, tasks: int) -> None:
    done = 0
    deadline = 0.0

    async def loop(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            await v.call(i)
            i += tasks
            done += 1

    cpu0, server0 = time.process_time(), node_cpu(v.server_pids)
    t0 = time.perf_counter()
    deadline = t0 + SECONDS
    await asyncio.gather(*(loop(k) for k in range(tasks)))
    elapsed = time.perf_counter() - t0
    v.record(f"c{tasks}", done / elapsed)
    v.record(f"cpu{tasks}", (time.process_time() - cpu0) / done)
    v.record(f"server{tasks}", (node_cpu(v.server_pids) - server0) / done)


async def batched(v: Variant) -> None:
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        replies = await v.batch(list(range(done, done + BATCH)))
        assert len(replies) == BATCH
        done += BATCH
    v.record("batch", done / (time.perf_counter() - t0))


async def main() -> None:
    Logger.set_logger_config(LogLevel.ERROR)  # glide logs each NOSCRIPT it handles as a warning
    with (
        tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp,
        EmbeddedCluster(Path(tmp) / "cluster", masters=3) as cluster,
        EmbeddedServer(Path(tmp) / "single") as server,
    ):
        made = [
            await glide_cluster(cluster),
            await redispy_cluster(cluster),
            await mux_per_node(cluster),
            await outlast_cluster(cluster),
            await outlast_mux(server),
            await glide_single(server),
        ]
        variants = [v for v, _ in made]
        try:
            for v in variants:  # warm-up: scripts loaded everywhere, connections to every node open
                for low in range(0, RUN_IDS, 256):  # (glide refuses more than 1,000 in flight)
                    await asyncio.gather(*(v.call(i) for i in range(low, low + 256)))
                await v.batch(list(range(BATCH)))
            for r in range(ROUNDS):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for v in order:
                    await serial(v)
                for tasks in (64, 256):
                    for v in order:
                        await concurrent(v, tasks)
                for v in order:
                    await batched(v)
        finally:
            for _, close in made:
                await close()
    report(variants)


def report(variants: list[Variant]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== cluster clients, A/B interleaved: EVALSHA touching 3 keys of one {{run}} slot, {RUN_IDS:,} "
          f"run ids; medians of {ROUNDS} rounds (load average {load}) ==")  # fmt: skip
    print(f"{'client (3 masters unless said)':<40}{'c=1 p50 µs':>11}{'p99 µs':>8}{'c=64 /s':>9}"
          f"{'c=256 /s':>10}{f'batch{BATCH} /s':>12}{'client CPU µs':>14}{'server CPU µs':>14}")  # fmt: skip
    for v in variants:
        cells = [
            f"{v.median('p50') * 1e6:>11.0f}", f"{v.median('p99') * 1e6:>8.0f}", f"{v.median('c64'):>9,.0f}",
            f"{v.median('c256'):>10,.0f}", f"{v.median('batch'):>12,.0f}",
            f"{v.median('cpu256') * 1e6:>14.1f}", f"{v.median('server256') * 1e6:>14.1f}",
        ]  # fmt: skip
        print(f"{v.label:<40}{''.join(cells)}")
    print("(CPU: per call at c=256; client = this process, all threads; server = every master's)")
    glide, redispy, per_node, hot, mux, _ = variants

    def ratio(a: Variant, b: Variant, key: str) -> str:
        """How much better ``a`` is than ``b`` (>1: better; latency and CPU: lower is better)."""
        x = a.median(key) / b.median(key)
        return f"{key} {1 / x if key in ('p50', 'p99', 'cpu256') else x:.2f}x"

    pairs = [
        ("glide vs redis-py RedisCluster (>1: glide better)", glide, redispy),
        ("outlast multiplexed per master vs glide", per_node, glide),
        ("glide cluster vs outlast multiplexed on 1 node", glide, mux),
        ("outlast HotPath on the cluster vs redis-py RedisCluster", hot, redispy),
        ("outlast HotPath on the cluster vs multiplexed on 1 node", hot, mux),
    ]
    for label, a, b in pairs:
        print(f"{label}: " + ", ".join(ratio(a, b, k) for k in ("p50", "c64", "c256", "batch", "cpu256")))


if __name__ == "__main__":
    from outlast.cli.main import loop_factory  # as bench/run.py: uvloop when installed

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
