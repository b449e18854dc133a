"""Waited commits on a cluster go over a commit multiplexer per master and follow the run's slot:
across a failover (MOVED) and a migration (ASK)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from outlast import events as ev
from outlast import serde
from outlast.store.base import OP_STEP, AppendItem, NewRun
from outlast.store.client import redis_from_url, register_script
from outlast.store.commands import HotPath
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.keys import run_keys
from outlast.store.redis import RedisStore
from tests.store.test_cluster_mux import _begin_migration, _move_keys, node_muxes, plain


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
            assert isinstance(client, RedisCluster)
            commits = node_muxes(client).connections(commits=True)
            assert set(commits) == {f"127.0.0.1:{master.port}", f"127.0.0.1:{replica.port}"}
            assert node_muxes(client).redirects == 1  # (MOVED: the slot repointed, not the map reread)
        finally:
            await client.aclose()


def wait_calls(node: EmbeddedServer) -> int:
    with plain(node) as conn:
        stats: dict[str, Any] = conn.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def test_a_commit_to_a_slot_being_migrated_is_made_and_waited_for_on_the_target(
    tmp_path: Path,
) -> None:
    with EmbeddedCluster(tmp_path, masters=2, replicas=1) as cluster:
        client = redis_from_url(cluster.url)
        assert isinstance(client, RedisCluster)
        hot = HotPath(client)
        script = register_script(client, "return redis.call('INCR', KEYS[1])")
        key = "n:{asked}"
        wait = ("WAIT", 1, 5000)
        try:
            assert await hot.script_then_wait(script, [key], [], wait) == (1, 1)
            muxes = node_muxes(client)
            # The slot is being migrated and its key already left: the source answers ASK, the
            # pair goes to the target as ASKING, script, WAIT on the target's commit connection.
            source, target = _begin_migration(cluster, client.keyslot(key))
            _move_keys(source, target, [key])
            before = wait_calls(source), wait_calls(target)
            refreshes = muxes.refreshes
            assert await hot.script_then_wait(script, [key], [], wait) == (2, 1)
            # (the source got the first try's WAIT too, sent with it: it covered no write)
            assert (wait_calls(source), wait_calls(target)) == (before[0] + 1, before[1] + 1)
            assert (muxes.redirects, muxes.refreshes) == (1, refreshes)  # the map left as it is
            assert f"127.0.0.1:{target.port}" in muxes.connections(commits=True)
            assert not muxes.connections()  # (nothing went over the hot connections)
            with plain(target) as conn:  # (WAIT's 1 above: the target's replica has it too)
                conn.execute_command("ASKING")
                assert conn.get(key) == b"2"
        finally:
            await client.aclose()


async def test_without_multiplexers_the_pair_is_a_pipeline_to_the_master(
    valkey_cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTLAST_MULTIPLEX", "0")
    client = redis_from_url(valkey_cluster.url)
    assert isinstance(client, RedisCluster)
    hot = HotPath(client)
    script = register_script(client, "return redis.call('INCR', KEYS[1])")
    key = f"n:{{{uuid.uuid4().hex}}}"
    try:
        await client.script_flush()  # (every master: the pipeline loads it on NOSCRIPT)
        master = valkey_cluster.master_of(key)
        before = wait_calls(master)
        assert await hot.script_then_wait(script, [key], [], ("WAIT", 0, 0)) == (1, 0)
        assert await hot.script_then_wait(script, [key], [], ("WAIT", 0, 0)) == (2, 0)
        assert wait_calls(master) == before + 3  # (the first pair twice: NOSCRIPT, then loaded)
        assert not client.multiplexers.connections(commits=True)  # type: ignore[attr-defined]
    finally:
        await client.aclose()
