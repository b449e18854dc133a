"""Failover: the master dies, its replica takes over, every run completes within the loss bound.

Replication is asynchronous. What a promoted replica may lack is a suffix of what the master
acknowledged: the writes it had not yet sent (docs/deploy.md, "Replication, failover and what
can be lost"). Each of Outlast's writes is one script, replicated as one unit, so the replica
holds a consistent prefix of every run: no gap in a run's seqs, no event without its checkpoint.
A lost step commit makes its step run again on replay (at least once); the log readers see
after the failover is still contiguous, each step completed once. With
``OUTLAST_COMMIT_WAIT=replicas:1`` nothing a worker was told is committed is lost.

To make the window certain rather than a race, the replica is cut off first (``REPLICAOF NO
ONE``: a partition), the master goes on acknowledging writes for a while, then it is SIGKILLed
and the replica is the new master (a manual failover, with a fresh replica of its own).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.store.client import redis_from_url
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore
from outlast.worker import Worker

from .conftest import SpawnWorker
from .failover_app import long_run

pytestmark = pytest.mark.timeout(60)

APP = str(Path(__file__).with_name("failover_app.py"))
RUNS = 4
STEPS = 25


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling a file another process writes, or a server's INFO


class Notes:
    """The worker's ``start <tag> <i>`` lines (see failover_app)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def acknowledged(self) -> set[tuple[str, int]]:
        """Step commits the worker was told are durable: step i+1 started."""
        started = [line.split() for line in self.lines()]
        return {(tag, int(i) - 1) for _, tag, i in started if int(i) > 0}


async def snapshot(client: aioredis.Redis, run_id: str) -> dict[int, ev.Event]:
    """The run as the promoted node holds it, checked to be a consistent prefix; its
    step.completed events by step index."""
    store = RedisStore(client)
    events = [e async for e in store.read_events(run_id, follow=False)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap
    assert (await store.get_run(run_id)).last_seq == len(events)
    completed = {int(e.data["result"]): e for e in events if e.type == ev.STEP_COMPLETED}
    checkpoints = await client.hlen(run_keys(run_id).steps)  # type: ignore[misc]
    assert checkpoints == len(completed)  # each step.completed came with its checkpoint
    return completed


def wait_calls(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    finally:
        client.close()
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def check_logs(dispatcher: Dispatcher, runs: dict[str, str], notes: Notes) -> Counter[str]:
    """Every run's log after recovery: contiguous, each step completed once; how often each
    step's body started."""
    for run_id in runs.values():
        events = [e async for e in dispatcher.store.read_events(run_id, follow=False)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        completed = Counter(int(e.data["result"]) for e in events if e.type == ev.STEP_COMPLETED)
        assert completed == Counter(range(STEPS))  # each step completed once in the log
    return Counter(notes.lines())


@pytest.mark.parametrize("mode", ["off", "replicas:1:5000"])
async def test_a_promoted_replica_loses_at_most_unreplicated_commits_and_every_run_completes(
    mode: str, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    master = EmbeddedServer(tmp_path / "master").start()
    replica = master.start_replica(tmp_path / "replica")
    servers = [master, replica]
    notes = Notes(tmp_path / "notes.log")
    env = {"OUTLAST_COMMIT_WAIT": mode, "FAILOVER_LOG": str(notes.path)}
    old = redis_from_url(master.url)
    new = redis_from_url(replica.url)
    try:
        start = Dispatcher(old).start
        runs = {
            f"t{n}": (await start(long_run, {"tag": f"t{n}", "steps": STEPS})).run_id for n in range(RUNS)
        }
        first = await spawn_worker(url=master.url, app=APP, concurrency=RUNS, env=env)

        # Every run is under way; then the partition: the replica stops following the master.
        await until(lambda: all(f"start {tag} 2" in notes.lines() for tag in runs), "every run's third step")
        await new.replicaof("NO", "ONE")
        before = set(notes.lines())
        if mode == "off":
            # A step that started after the partition and was acknowledged (the next one began):
            # its commit exists on the master alone.
            def acked_alone() -> bool:
                lines = set(notes.lines())
                fresh = (line.split() for line in lines - before)
                return any(f"start {tag} {int(i) + 1}" in lines for _, tag, i in fresh)

            await until(acked_alone, "a step commit acknowledged after the partition")
        else:
            # A commit is held in WAIT: the master has it, no replica does, the worker is not told.
            async def blocked() -> int:
                return int((await old.info("clients"))["blocked_clients"])

            deadline = time.monotonic() + 20
            while await blocked() == 0:
                assert time.monotonic() < deadline, "no commit waited for the replica"
                await asyncio.sleep(0.01)
        acknowledged = notes.acknowledged()
        master.kill()
        first.signal(signal.SIGKILL)
        await first.wait()

        # The bound, on the promoted node before anything more is written to it.
        kept = {tag: set(await snapshot(new, run_id)) for tag, run_id in runs.items()}
        lost = {(tag, i) for tag, i in acknowledged if i not in kept[tag]}
        if mode == "off":
            assert lost, "commits acknowledged after the partition are on the dead master only"
        else:
            assert not lost, f"acknowledged commits lost despite {mode}: {sorted(lost)}"

        # Recovery: a fresh replica for the new master, a worker on it; every run completes.
        servers.append(replica.start_replica(tmp_path / "replica2"))
        await spawn_worker(url=replica.url, app=APP, concurrency=RUNS, env=env)
        dispatcher = Dispatcher(new)
        for run_id in runs.values():
            assert await dispatcher.result(run_id, timeout=30) == sum(range(STEPS))
        starts = await check_logs(dispatcher, runs, notes)
        for tag in runs:
            for i in kept[tag]:
                assert starts[f"start {tag} {i}"] == 1  # kept commits never ran again
            for lost_tag, i in lost:
                if lost_tag == tag:
                    assert starts[f"start {tag} {i}"] == 2  # a lost commit: its step ran again
    finally:
        await old.aclose()
        await new.aclose()
        for server in servers:
            server.kill()


@pytest.mark.parametrize("mode", ["off", "replicas:1"])
async def test_on_a_cluster_a_killed_masters_runs_continue_and_keep_every_waited_commit(
    mode: str, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    notes = Notes(tmp_path / "notes.log")
    env = {"OUTLAST_COMMIT_WAIT": mode, "FAILOVER_LOG": str(notes.path)}
    with EmbeddedCluster(tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        client = redis_from_url(cluster.url)
        try:
            dispatcher = Dispatcher(client)
            start = dispatcher.start
            runs = {
                f"c{n}": (await start(long_run, {"tag": f"c{n}", "steps": STEPS})).run_id for n in range(6)
            }
            for _ in range(2):
                await spawn_worker(url=cluster.url, app=APP, concurrency=len(runs), env=env)
            await until(
                lambda: all(f"start {tag} 2" in notes.lines() for tag in runs), "every run's third step"
            )
            victim = cluster.master_of(run_keys(next(iter(runs.values()))).meta)
            victim.kill()
            acknowledged = notes.acknowledged()  # told durable before the kill (or on another master)
            await asyncio.to_thread(cluster.wait_for_promotion, victim)
            # Back as the replica of its replica (else every waited commit there times out).
            await asyncio.to_thread(victim.start)
            for run_id in runs.values():
                assert await dispatcher.result(run_id, timeout=40) == sum(range(STEPS))
            starts = await check_logs(dispatcher, runs, notes)
            waits = sum(wait_calls(node.port) for node in cluster.nodes if node.running)
            assert (waits > 0) == (mode != "off")  # the commits' WAITs reached the masters
            if mode != "off":
                again = sorted((tag, i) for tag, i in acknowledged if starts[f"start {tag} {i}"] > 1)
                assert not again, f"steps whose commits were acknowledged ran again: {again}"
        finally:
            await client.aclose()


async def test_a_worker_reports_its_commit_wait_and_the_waits_that_fell_short(
    redis_url: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTLAST_COMMIT_WAIT", "replicas:1:5")
    worker = Worker([long_run], redis, worker_id="w-durable")
    worker.store.commit_wait.check(0, "run r seq 2")  # the suite's server has no replica: short
    await worker.upkeep.report()
    (listed,) = [w for w in await Dispatcher(redis).workers() if w["id"] == "w-durable"]
    assert (listed["commit_wait"], listed["commit_wait_shortfalls"]) == ("replicas:1:5", 1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from outlast.cli.main import main; main()", "workers", "--redis", redis_url,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    shown, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert b"replicas:1:5 (1 fell short)" in shown
