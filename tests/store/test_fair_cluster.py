"""The fair scripts on the session's local 3-master cluster, through redis-py's RedisCluster
directly: each touches one slot (its partition's), and a version's partitions land on different
masters (test_fair.py runs the same scripts through Outlast's own client on the cluster too)."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from outlast.store import keys
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.fair import Fairness, FairQueues, Partitions


async def test_fair_scripts_run_on_a_cluster_one_slot_each(valkey_cluster: EmbeddedCluster) -> None:
    cluster = valkey_cluster
    client = RedisCluster(host="127.0.0.1", port=cluster.masters[0].port)
    try:
        await client.flushdb()
        assert await Partitions(client).record("dev", 6) == (6, 6)
        streams = [keys.work_partition("dev", i) for i in range(6)]
        assert len({cluster.master_of(s).port for s in streams}) > 1  # dispatch spread over nodes
        fair = FairQueues(client, 1000)
        for stream in streams:
            await client.xgroup_create(stream, keys.WORK_GROUP, id="0", mkstream=True)
            await fair.set_limits(stream, "A", 1, None)
            for i in range(3):
                await fair.push(stream, f"{stream}-a{i}", Fairness("A"))
            await fair.push(stream, f"{stream}-b0", Fairness("B"))
            moved, ring, read = await fair.pump_read(stream, 10, "w1")
            assert (moved, ring) == (2, 0)  # a0 and b0: A is at its cap of 1
            runs = [fields[b"run"] for _, fields in read if fields.get(b"run")]
            assert runs == [f"{stream}-a0".encode(), f"{stream}-b0".encode()]
            # a0's record does not exist (gone): the reaper frees A's slot, A pumps again.
            assert await fair.reap(stream) == 1
            assert (await fair.pump_read(stream, 10, "w1"))[0] == 1
            assert await fair.queued(stream) >= 1  # (a2 waits; read entries are pending)
    finally:
        await client.aclose()
