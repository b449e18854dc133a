"""Waited commits on a cluster follow the run's slot to its master, across a failover."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis

from outlast import events as ev
from outlast import serde
from outlast.store.base import OP_STEP, AppendItem, NewRun
from outlast.store.client import redis_from_url
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore


def event(run_id: str, seq: int, type: str = ev.STEP_COMPLETED) -> bytes:
    data = {"n": seq}
    return serde.dumps(
        ev.envelope(seq=seq, type=type, run_id=run_id, attempt=1, step=None, ts=time.time(), data=data)
    )


def switched(cluster: EmbeddedCluster, replica_port: int) -> bool:
    """The replica now serves the slots as master, and its old master follows it."""
    client = redis.Redis(port=replica_port)
    try:
        info = client.info("replication")
        return (
            info.get("role") == "master" and int(info.get("connected_slaves", 0)) >= 1 and cluster.healthy()
        )
    finally:
        client.close()


async def test_a_commit_after_a_manual_failover_is_rerouted_and_waits_on_the_new_master(
    tmp_path: Path,
) -> None:
    with EmbeddedCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        client = redis_from_url(cluster.url)
        try:
            store = RedisStore(client, commit_wait="replicas:1")
            queued = event("m1", 1, ev.RUN_QUEUED)
            await store.create_run(NewRun(run_id="m1", workflow="wf", input={}), queued)
            await store.begin_attempt("m1")
            step = ((OP_STEP, "0", b"{}"),)
            assert await store.append("m1", 1, [AppendItem(2, event("m1", 2), step)]) == 2
            # The master's replica takes over gracefully (both stay up): the client's slot map
            # still names the old master, which now answers MOVED.
            master = cluster.master_of(run_keys("m1").meta)
            index = cluster.masters.index(master)
            replica = cluster.replicas[index]
            redis.Redis(port=replica.port).execute_command("CLUSTER", "FAILOVER")
            deadline = time.monotonic() + 20
            while not switched(cluster, replica.port):
                assert time.monotonic() < deadline, "the manual failover did not complete"
                await asyncio.sleep(0.05)  # polling the cluster's own failover; it offers no event
            assert await store.append("m1", 1, [AppendItem(3, event("m1", 3), ((OP_STEP, "1", b"{}"),))]) == 3
            assert store.commit_wait.waits == 2
            assert store.commit_wait.shortfalls == 0  # the old master, now its replica, has it
            assert await client.hlen(run_keys("m1").steps) == 2  # type: ignore[misc]
        finally:
            await client.aclose()
