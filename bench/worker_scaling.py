"""Worker scaling (issue #20): runs/s with 1, 2 and 4 ``outlast worker`` processes, against one
Valkey node and against a local 3-master cluster, and where the CPU goes meanwhile.

Each measurement: N workers of a fresh version start and report ready, are stopped (SIGSTOP),
3,000 one-step runs are queued for them, and they are continued (SIGCONT) together; runs/s is
3,000 over the time from SIGCONT to the last run's ``finished_at``. Queueing while the workers
are stopped keeps the starter's CPU out of the drain and all N workers start the drain at once
(process start-up, about a second of CPU each, never counts). CPU time of the servers, the
workers and this process (the starter) is read from /proc over the enqueue and over the drain.
Worker counts and targets alternate within each round; medians of the rounds are printed.

The cluster rows need Outlast's ``redis+cluster://`` support: on a build without it the starter
or the first worker refuses the URL, and the rows say so instead of failing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_app import one_step  # noqa: E402
from cluster_clients import node_cpu  # noqa: E402
from outlast.control import Dispatcher  # noqa: E402
from outlast.errors import OutlastError  # noqa: E402
from outlast.store.connect import connect  # noqa: E402
from outlast.store.embedded import EmbeddedServer  # noqa: E402
from outlast.store.embedded_cluster import EmbeddedCluster  # noqa: E402
from worker_throughput import outlast_worker, stop  # noqa: E402

RUNS = int(os.environ.get("BENCH_SCALING_RUNS", "3000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKERS = (1, 2, 4)
CONCURRENCY = 200  # per worker process, as the `worker` row


class Unavailable(Exception):
    """The target cannot be used on this build (said in the report, not raised further)."""


@dataclass
class Target:
    name: str
    url: str
    server_pids: list[int]
    samples: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    unavailable: str = ""

    def median(self, workers: int, key: str) -> float:
        return statistics.median(s[key] for s in self.samples[workers])


async def start_workers(url: str, n: int, version: str, logs: Path) -> list[asyncio.subprocess.Process]:
    env = {**os.environ, "BENCH_REDIS_URL": url}
    procs = []
    cmd = outlast_worker(url, "--concurrency", str(CONCURRENCY), "--version", version)
    for k in range(n):
        with (logs / f"{version}-{k}.log").open("wb") as log:  # a JSON line per run: a file, not a pipe
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=HERE, stdout=PIPE, stderr=log)
            procs.append(proc)
    for k, proc in enumerate(procs):
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.startswith(b"worker "):
                break
            if not line:  # it exited before being ready: say why
                for other in procs:
                    await stop(other)
                lines = (logs / f"{version}-{k}.log").read_text(errors="replace").strip().splitlines()
                raise Unavailable(lines[-1] if lines else f"the worker exited with {await proc.wait()}")
    return procs


def cpu_of(pids: list[int]) -> float:
    return node_cpu(pids) if pids else 0.0


def host_busy() -> tuple[float, float]:
    """CPU seconds the whole host spent busy (every process, all cores) and stolen by the
    hypervisor, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


async def measure(target: Target, dispatcher: Dispatcher, n: int, version: str, logs: Path) -> None:
    workers = await start_workers(target.url, n, version, logs)
    pids = [w.pid for w in workers]
    try:
        for w in workers:
            w.send_signal(signal.SIGSTOP)
        server0, starter0, t0 = cpu_of(target.server_pids), time.process_time(), time.perf_counter()
        ids: list[str] = []
        for low in range(0, RUNS, 100):
            started = await asyncio.gather(
                *(dispatcher.start(one_step, {"i": i}, version=version) for i in range(low, low + 100))
            )
            ids += [s.run_id for s in started]
        enqueue_s = time.perf_counter() - t0
        starter1, server1, workers1 = time.process_time(), cpu_of(target.server_pids), cpu_of(pids)
        host1, steal1 = host_busy()
        began = time.time()  # the clock finished_at is written with (the server's, on this host)
        for w in workers:
            w.send_signal(signal.SIGCONT)
        await dispatcher.wait(ids[-1], timeout=120)  # (the drain's CPU is read as the last run ends)
        server2, workers2, starter2 = cpu_of(target.server_pids), cpu_of(pids), time.process_time()
        host2, steal2 = host_busy()
        cpu_window = time.time() - began
        ended = 0.0
        for run_id in ids:
            record = await dispatcher.wait(run_id, timeout=120)
            if record.result != int(record.input["i"]) or record.finished_at is None:
                raise RuntimeError(f"run {run_id} ended {record.status} with {record.result!r}")
            ended = max(ended, record.finished_at)
    finally:
        for w in workers:
            if w.returncode is None:
                w.send_signal(signal.SIGCONT)
            await stop(w)
    drain = ended - began
    target.samples.setdefault(n, []).append(
        {
            "runs_per_s": RUNS / drain,
            "enqueue_per_s": RUNS / enqueue_s,
            "starter_enq_us": (starter1 - starter0) / RUNS * 1e6,
            "server_enq_us": (server1 - server0) / RUNS * 1e6,
            "worker_us": (workers2 - workers1) / RUNS * 1e6,
            "server_us": (server2 - server1) / RUNS * 1e6,
            "starter_us": (starter2 - starter1) / RUNS * 1e6,
            # shares of one core over the drain (2 cores = 200 %)
            "worker_pct": (workers2 - workers1) / cpu_window * 100,
            "server_pct": (server2 - server1) / cpu_window * 100,
            "starter_pct": (starter2 - starter1) / cpu_window * 100,
            "host_pct": (host2 - host1) / cpu_window * 100,
            "steal_pct": (steal2 - steal1) / cpu_window * 100,
        }
    )
    sample = target.samples[n][-1]
    ours = sample["worker_pct"] + sample["server_pct"] + sample["starter_pct"]
    sample["other_pct"] = sample["host_pct"] - ours


async def rounds(targets: list[Target], logs: Path) -> None:
    for r in range(ROUNDS):
        for target in targets:
            if target.unavailable:
                continue
            try:
                async with connect(target.url) as client:
                    dispatcher = Dispatcher(client)
                    try:
                        order = WORKERS[r % 3 :] + WORKERS[: r % 3]
                        for n in order:
                            await measure(target, dispatcher, n, f"scale-{n}w-r{r}", logs)
                    finally:
                        await dispatcher.aclose()
            except (OutlastError, Unavailable, ValueError) as exc:
                if target.samples:
                    raise  # it worked before: a real failure
                said = str(exc).replace(target.url, "the URL").strip().splitlines()
                target.unavailable = f"{type(exc).__name__}: {said[0] if said else ''}"[:120]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp:
        base = Path(tmp)
        (base / "logs").mkdir()
        with (
            EmbeddedServer(base / "single") as server,
            EmbeddedCluster(base / "cluster", masters=3) as cluster,
        ):
            targets = [
                Target("one node", server.url, [server.process.pid] if server.process else []),
                Target(
                    "cluster, 3 masters",
                    cluster.url,
                    [node.process.pid for node in cluster.masters if node.process],
                ),
            ]
            await rounds(targets, base / "logs")
    report(targets)


def report(targets: list[Target]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== worker scaling: {RUNS:,} queued one-step runs drained by N worker processes "
          f"(concurrency {CONCURRENCY} each), {os.cpu_count()} cores; medians of {ROUNDS} rounds "
          f"(load average {load}) ==")  # fmt: skip
    print(f"{'target':<20}{'workers':>8}{'runs/s':>9}{'vs 1w':>7}{'worker CPU':>12}{'server CPU':>12}"
          f"{'workers %':>11}{'server %':>10}{'other %':>9}{'host %':>8}")  # fmt: skip
    for target in targets:
        if target.unavailable:
            print(f"{target.name:<20}cluster: not available on this build ({target.unavailable})")
            continue
        one = target.median(1, "runs_per_s")
        for n in WORKERS:
            rate = target.median(n, "runs_per_s")
            print(
                f"{target.name:<20}{n:>8}{rate:>9,.0f}{rate / one:>6.2f}x"
                f"{target.median(n, 'worker_us'):>9.0f} µs{target.median(n, 'server_us'):>9.0f} µs"
                f"{target.median(n, 'worker_pct'):>10.0f}%{target.median(n, 'server_pct'):>9.0f}%"
                f"{target.median(n, 'other_pct'):>8.0f}%{target.median(n, 'host_pct'):>7.0f}%"
            )
        queued, starter = target.median(1, "enqueue_per_s"), target.median(1, "starter_enq_us")
        print(f"{'':<20}scaling 2w/1w {target.median(2, 'runs_per_s') / one:.2f}x, "
              f"4w/1w {target.median(4, 'runs_per_s') / one:.2f}x; the starter queued {queued:,.0f} runs/s "
              f"at {starter:.0f} µs of its CPU + {target.median(1, 'server_enq_us'):.0f} µs of the server's "
              "per run")  # fmt: skip
        limits(target)
    print(
        "(CPU per run over the drain; % = share of one core over the drain, the machine has "
        f"{100 * (os.cpu_count() or 1)} %; other = the host's busy time not ours: other processes)"
    )


def limits(target: Target) -> None:
    """What bounds the rate, from the CPU measured: one worker process runs on one core at most;
    more share the host's cores with the server; and whatever else runs on the host takes its part."""
    cores = os.cpu_count() or 1
    worker_s = statistics.median(s["worker_us"] for runs in target.samples.values() for s in runs) / 1e6
    server_s = statistics.median(s["server_us"] for runs in target.samples.values() for s in runs) / 1e6
    one_core, all_cores = 1 / worker_s, cores / (worker_s + server_s)
    n = max(WORKERS, key=lambda k: target.median(k, "runs_per_s"))
    host, ours = target.median(n, "host_pct"), target.median(n, "worker_pct") + target.median(n, "server_pct")
    print(
        f"{'':<20}limit: CPU per run {worker_s * 1e6:.0f} µs in a worker + {server_s * 1e6:.0f} µs in the "
        f"server{'s' if len(target.server_pids) > 1 else ''}; 1 worker is one process, one core at most: "
        f"≤ {one_core:,.0f} runs/s; more share the {cores} cores with the server: ≤ {all_cores:,.0f} runs/s, "
        f"so ≤ {all_cores / one_core:.2f}x over 1 worker is all {cores} idle cores allow"
    )
    print(
        f"{'':<20}measured at {n}w: the host {host / cores:.0f}% busy, {ours:.0f} of its {100 * cores}% "
        f"ours, {target.median(n, 'other_pct'):.0f}% other processes, "
        f"{target.median(n, 'steal_pct'):.0f}% stolen by the hypervisor"
    )


if __name__ == "__main__":
    from outlast.cli.main import loop_factory  # as bench/run.py: uvloop when installed

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
