"""The control plane's side of fair queues: a key's limits, and what deploy status counts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from outlast.control import Dispatcher
from outlast.errors import ConfigError
from outlast.store import keys
from outlast.store.fair import Partitions, partition_of
from tests.worker.app import quick


def limits_of(version: str, index: int) -> str:
    return keys.fair_keys(keys.work_partition(version, index))[2]


@pytest.mark.cluster
async def test_set_fairness_writes_each_partition_the_key_may_hash_to(redis: aioredis.Redis) -> None:
    await Partitions(redis).record("dev", 4)  # (a worker with OUTLAST_QUEUE_PARTITIONS=4 started)
    await redis.zadd(keys.VERSIONS, {"dev": 1})
    dispatcher = Dispatcher(redis)
    await dispatcher.set_fairness("K", max_concurrency=3, weight=2)
    hashed = {partition_of("K", n) for n in range(1, 5)}  # wherever K goes with 1..4 partitions
    for index in range(4):
        written = await redis.hgetall(limits_of("dev", index))
        assert written == ({b"c:K": b"3", b"w:K": b"2"} if index in hashed else {}), index
    assert await redis.hgetall(limits_of(keys.ANY_VERSION, 0)) == {b"c:K": b"3", b"w:K": b"2"}
    await dispatcher.set_fairness("K", max_concurrency=0)  # clears the cap, leaves the weight
    assert await redis.hgetall(limits_of("dev", partition_of("K", 4))) == {b"w:K": b"2"}
    with pytest.raises(ConfigError, match="max_concurrency"):
        await dispatcher.set_fairness("K", max_concurrency=-1)
    with pytest.raises(ConfigError, match="fairness key"):
        await dispatcher.start(quick, {"n": 1}, max_concurrency=2)  # a cap of no key


@pytest.mark.cluster
async def test_deploy_status_counts_runs_waiting_in_fair_queues(redis: aioredis.Redis) -> None:
    await redis.xgroup_create(keys.work_stream("dev"), keys.WORK_GROUP, id="0", mkstream=True)
    dispatcher = Dispatcher(redis)
    await dispatcher.start(quick, {"n": 1})
    for key in ("A", "A", "B"):
        await dispatcher.start(quick, {"n": 1}, fairness_key=key)
    (status,) = (await dispatcher.deploy_status())["versions"]
    # The plain run's entry, the three fair runs in their keys' lists, and the bell that wakes a
    # worker for them: a version with runs only in fair queues is not "drained".
    assert status["queued"] == 5
    assert status["state"] == "draining"  # (no worker made it active; not "drained")


def test_the_fairness_command_sets_a_keys_limits(redis_url: str) -> None:
    cli = [sys.executable, "-c", "from outlast.cli.main import main; main()", "fairness"]
    done = subprocess.run([*cli, "K", "--max-concurrency", "2", "--redis", redis_url], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "max_concurrency=2" in done.stdout
    client = redis_sync.Redis.from_url(redis_url)
    try:
        assert client.hget(limits_of(keys.ANY_VERSION, 0), "c:K") == b"2"
    finally:
        client.close()
    refused = subprocess.run([*cli, "K", "--weight", "-3", "--redis", redis_url], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "weight must be between" in refused.stderr
    assert "Traceback" not in refused.stderr
