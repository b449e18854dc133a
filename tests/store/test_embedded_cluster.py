"""The local cluster the cluster-marked tests, benches and failover tests run on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from outlast.store.embedded import EmbeddedServer
from outlast.store.embedded_cluster import EmbeddedCluster


def test_a_local_cluster_serves_every_slot_and_promotes_a_replica(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
        client = RedisCluster(host="127.0.0.1", port=cluster.masters[0].port)
        try:
            keys = [f"k{i}" for i in range(50)]
            for key in keys:
                client.set(key, key)
            owners = {cluster.master_of(key).port for key in keys}
            assert owners == {m.port for m in cluster.masters}  # every master holds some keys
            victim = cluster.master_of("k7")
            # WAIT on the connection that wrote: the write reached the replica, so it survives.
            node = client.get_node(host="127.0.0.1", port=victim.port)
            assert client.execute_command("WAIT", 1, 2000, target_nodes=node) == 1
            victim.kill()
            promoted = cluster.wait_for_promotion(victim)
            assert promoted in cluster.replicas
            assert cluster.master_of("k7") is promoted
            client.close()
            client = RedisCluster(host="127.0.0.1", port=promoted.port)
            assert client.get("k7") == b"k7"
        finally:
            client.close()


def test_a_cluster_needs_a_master(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one master"):
        EmbeddedCluster(tmp_path, masters=0)


def test_a_node_whose_ports_were_taken_meanwhile_starts_on_fresh_ones(tmp_path: Path) -> None:
    # Ports are picked free, then bound by the servers a moment later: another process may take
    # one in between. Here a Valkey takes a master's port and a plain socket a replica's bus port.
    cluster = EmbeddedCluster(tmp_path / "cluster", masters=2, replicas=1)
    taken_port = cluster.masters[0].port
    replica_args = cluster.replicas[1].extra_args
    taken_bus = int(replica_args[replica_args.index("--cluster-port") + 1])
    with (
        EmbeddedServer(tmp_path / "other", port=taken_port),
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder,
    ):
        holder.bind(("127.0.0.1", taken_bus))
        holder.listen()
        with cluster:
            assert cluster.healthy()
            assert cluster.masters[0].port != taken_port
            assert str(taken_bus) not in cluster.replicas[1].extra_args
            client = RedisCluster(host="127.0.0.1", port=cluster.masters[0].port)
            try:
                client.set("k", "v")
                assert client.get("k") == b"v"
                assert len(client.get_primaries()) == 2
            finally:
                client.close()
