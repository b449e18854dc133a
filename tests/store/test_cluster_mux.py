"""The hot path on a cluster: one multiplexed connection per master, calls routed by slot, and
the topology changes it meets (a migrated slot, a slot being migrated, a failover) followed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from outlast import events as ev
from outlast.store.base import AppendItem, NewRun
from outlast.store.client import multiplexer_of, redis_from_url, register_script
from outlast.store.commands import HotPath
from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.keys import run_keys
from outlast.store.node_mux import NodeMultiplexers
from outlast.store.redis import RedisStore
from tests.store.test_redis_store import envelope

INCR = "return redis.call('INCR', KEYS[1])"


def plain(node: EmbeddedServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)


def node_muxes(client: RedisCluster) -> NodeMultiplexers:
    muxes = multiplexer_of(client)
    assert isinstance(muxes, NodeMultiplexers)
    return muxes


def evalsha_calls(node: EmbeddedServer) -> int:
    with plain(node) as conn:
        stats: dict[str, Any] = conn.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def evalsha_connections(node: EmbeddedServer) -> int:
    """Connections to ``node`` whose last command was a script call."""
    with plain(node) as conn:
        listing: list[dict[str, Any]] = conn.client_list()
    return sum(1 for entry in listing if entry.get("cmd") == "evalsha")


async def test_calls_across_every_master_share_one_connection_per_master(
    valkey_cluster: EmbeddedCluster,
) -> None:
    client = redis_from_url(valkey_cluster.url)
    assert isinstance(client, RedisCluster)
    hot = HotPath(client)
    script = register_script(client, INCR)
    tag = uuid.uuid4().hex
    keys = [f"n:{{{tag}-{i}}}" for i in range(600)]
    before = {node.port: evalsha_calls(node) for node in valkey_cluster.masters}
    try:
        await hot.script(script, [keys[0]], [])  # (the script loaded once on every master)
        replies = await asyncio.gather(*(hot.script(script, [key], []) for key in keys))
        assert replies == [2] + [1] * 599  # each call ran once, on its key's master
        masters = {f"127.0.0.1:{node.port}" for node in valkey_cluster.masters}
        assert set(node_muxes(client).connections()) == masters
        for node in valkey_cluster.masters:
            routed = sum(1 for key in keys if valkey_cluster.master_of(key) is node)
            assert routed > 0
            # 600 concurrent calls: through redis-py's pools they would open many connections.
            assert evalsha_connections(node) == 1
            assert evalsha_calls(node) - before[node.port] >= routed
    finally:
        await client.aclose()
    assert node_muxes(client).connections() == {}


async def test_a_step_append_is_one_command_to_its_runs_master(valkey_cluster: EmbeddedCluster) -> None:
    client = redis_from_url(valkey_cluster.url)
    store = RedisStore(client)
    run_id = uuid.uuid4().hex
    try:
        assert await store.create_run(
            NewRun(run_id=run_id, workflow="wf", input={}), envelope(run_id, 1, ev.RUN_QUEUED, 0)
        )
        await store.begin_attempt(run_id)
        await store.append(run_id, 1, [AppendItem(2, envelope(run_id, 2))])  # (connected)
        master = valkey_cluster.master_of(run_keys(run_id).meta)
        with plain(master) as conn, plain(master) as marker:
            marker.ping()  # (connected: its hello is not shown below)
            with conn.monitor() as monitor:
                await store.append(run_id, 1, [AppendItem(3, envelope(run_id, 3))])
                marker.echo("end")  # (after the append's commands in the server's order)
                sent = []
                while (line := monitor.next_command())["command"] != "ECHO end":
                    if line["client_type"] != "lua":  # (commands the script ran are shown too)
                        sent.append(line["command"].split()[0])
        assert sent == ["EVALSHA"]  # from any client: one round trip, no slot lookup or retry
    finally:
        await client.aclose()


async def test_a_script_the_masters_lost_is_loaded_again(valkey_cluster: EmbeddedCluster) -> None:
    client = redis_from_url(valkey_cluster.url)
    hot = HotPath(client)
    script = register_script(client, INCR)
    key = f"n:{{{uuid.uuid4().hex}}}"
    try:
        assert await hot.script(script, [key], []) == 1
        for node in valkey_cluster.masters:
            with plain(node) as conn:
                conn.script_flush()
        assert await hot.script(script, [key], []) == 2
    finally:
        await client.aclose()


async def test_multiplexing_off_leaves_the_cluster_to_redis_py(
    valkey_cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTLAST_MULTIPLEX", "0")
    client = redis_from_url(valkey_cluster.url)
    try:
        assert multiplexer_of(client) is None
        hot = HotPath(client)
        key = f"n:{{{uuid.uuid4().hex}}}"
        assert await hot.script(register_script(client, INCR), [key], []) == 1
    finally:
        await client.aclose()


@pytest.fixture
def two_masters(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, masters=2) as cluster:
        yield cluster


def _begin_migration(cluster: EmbeddedCluster, slot: int) -> tuple[EmbeddedServer, EmbeddedServer]:
    source = next(node for node in cluster.masters if _serves(node, slot))
    target = next(node for node in cluster.masters if node is not source)
    with plain(source) as src, plain(target) as dst:
        source_id, target_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    return source, target


def _move_keys(source: EmbeddedServer, target: EmbeddedServer, keys: list[str]) -> None:
    with plain(source) as src:
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


def _end_migration(cluster: EmbeddedCluster, slot: int, target: EmbeddedServer) -> None:
    with plain(target) as dst:
        target_id = dst.execute_command("CLUSTER", "MYID")
    for node in cluster.masters:
        with plain(node) as conn:
            conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def _serves(node: EmbeddedServer, slot: int) -> bool:
    with plain(node) as conn:
        me = conn.execute_command("CLUSTER", "MYID")
        ranges = conn.execute_command("CLUSTER", "SLOTS")
        return any(low <= slot <= high and entry[2] == me for low, high, entry, *_ in ranges)


async def test_a_slot_migrated_away_and_one_being_migrated_are_followed(two_masters: EmbeddedCluster) -> None:
    client = redis_from_url(two_masters.url)
    assert isinstance(client, RedisCluster)
    hot = HotPath(client)
    script = register_script(client, INCR)
    moved, asked = "n:{moved}", "n:{asked}"
    try:
        assert await hot.script(script, [moved], []) == 1  # the client knows where both slots are
        assert await hot.script(script, [asked], []) == 1
        muxes = node_muxes(client)

        # A slot being migrated: its key already on the target. The source answers ASK; the call
        # goes to the target after ASKING; the slot map stays as it is.
        slot = client.keyslot(asked)
        source, target = _begin_migration(two_masters, slot)
        _move_keys(source, target, [asked])
        refreshes = muxes.refreshes
        assert await hot.script(script, [asked], []) == 2
        assert (muxes.redirects, muxes.refreshes) == (1, refreshes)
        _end_migration(two_masters, slot, target)

        # A slot migrated away: the old master answers MOVED; the slot is pointed at the new one.
        slot = client.keyslot(moved)
        source, target = _begin_migration(two_masters, slot)
        _move_keys(source, target, [moved])
        _end_migration(two_masters, slot, target)
        assert await hot.script(script, [moved], []) == 2
        assert muxes.redirects == 2
        assert await hot.script(script, [moved], []) == 3  # straight to its new master
        assert muxes.redirects == 2
        node = client.get_node_from_key(moved)
        assert node is not None
        assert node.port == target.port
    finally:
        await client.aclose()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


async def test_a_failover_is_followed_to_the_promoted_replica(replicated: EmbeddedCluster) -> None:
    client = redis_from_url(replicated.url)
    assert isinstance(client, RedisCluster)
    hot = HotPath(client)
    script = register_script(client, INCR)
    key = "n:{failover}"
    try:
        assert await hot.script(script, [key], []) == 1
        killed = replicated.master_of(key)
        with plain(killed) as conn:  # the write reached the replica before the kill
            assert conn.execute_command("WAIT", 1, 5000) == 1
        killed.kill()
        promoted = await asyncio.to_thread(replicated.wait_for_promotion, killed)
        assert await hot.script(script, [key], []) == 2  # (refused by the dead master, then rerouted)
        names = set(node_muxes(client).connections())
        assert f"127.0.0.1:{promoted.port}" in names
        assert f"127.0.0.1:{killed.port}" not in names
        assert node_muxes(client).refreshes >= 1
    finally:
        await client.aclose()


async def test_tls_and_decoding_cluster_clients_leave_the_hot_path_to_redis_py() -> None:
    # (nothing connects: the clients are made and closed)
    for client in (
        redis_from_url("rediss+cluster://127.0.0.1:7000"),
        redis_from_url("redis+cluster://127.0.0.1:7000", decode_responses=True),
    ):
        assert isinstance(client, RedisCluster)
        assert not node_muxes(client).usable
        await client.aclose()
    plain_client = redis_from_url("redis+cluster://127.0.0.1:7000")
    assert isinstance(plain_client, RedisCluster)
    assert node_muxes(plain_client).usable
    await plain_client.aclose()
