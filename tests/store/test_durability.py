"""Commit waits (OUTLAST_COMMIT_WAIT): WAIT/WAITAOF after step commits and run ends, on a real
master with a real replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from outlast import events as ev
from outlast import serde
from outlast.errors import ConfigError
from outlast.events import RunStatus
from outlast.store.base import OP_EXPIRE, OP_META, OP_STEP, AppendItem, NewRun
from outlast.store.client import redis_from_url
from outlast.store.durability import CommitWait
from outlast.store.embedded import EmbeddedServer
from outlast.store.keys import run_keys
from outlast.store.leases import RunLeases
from outlast.store.redis import RedisStore


def test_the_setting_parses_and_refuses_what_it_cannot_honour() -> None:
    assert not CommitWait.parse("off").enabled
    assert CommitWait.parse("replicas:1").command() == ("WAIT", 1, 1000)
    assert CommitWait.parse("replicas:2:250").command() == ("WAIT", 2, 250)
    assert CommitWait.parse("aof").command() == ("WAITAOF", 1, 0, 1000)
    assert CommitWait.parse("aof:1:1").command() == ("WAITAOF", 1, 1, 1000)
    assert CommitWait.parse("aof:0:1:300").command() == ("WAITAOF", 0, 1, 300)
    assert CommitWait.parse("replicas:1+all").every_append
    assert str(CommitWait.parse("aof:1:1+all")) == "aof:1:1:1000+all"
    refused = ("replicas", "replicas:x", "replicas:0", "replicas:1:0", "aof:0:0", "aof:2", "fsync", "off+all")
    for bad in (*refused, "replicas:1:60000"):
        with pytest.raises(ConfigError):
            CommitWait.parse(bad)


def event(run_id: str, seq: int, type: str = ev.STATUS) -> bytes:
    data = {"n": seq}
    return serde.dumps(
        ev.envelope(seq=seq, type=type, run_id=run_id, attempt=1, step=None, ts=time.time(), data=data)
    )


STEP = (OP_STEP, "0", b'{"result": 1}')
MARKER = (OP_STEP, "0#emit1", "1")


def test_only_checkpoints_and_run_ends_wait_unless_every_append_does() -> None:
    wait = CommitWait.parse("replicas:1")
    status = AppendItem(2, b"{}", ((OP_META, "status_message", "x"), MARKER))
    assert not wait.applies([status])
    assert wait.applies([status, AppendItem(3, b"{}", (STEP,))])
    assert wait.applies([AppendItem(3, b"{}", ((OP_META, "status", "completed"), (OP_EXPIRE, "60", "")))])
    assert CommitWait.parse("replicas:1+all").applies([status])
    assert not CommitWait.parse("off").applies([AppendItem(3, b"{}", (STEP,))])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    root = tmp_path_factory.mktemp("pair")
    master = EmbeddedServer(root / "master").start()
    try:
        replica = master.start_replica(root / "replica")
        yield master, replica
        replica.stop()
    finally:
        master.stop()


@pytest.fixture
async def master(pair: tuple[EmbeddedServer, EmbeddedServer]) -> AsyncIterator[aioredis.Redis]:
    client = redis_from_url(pair[0].url)
    await client.flushdb()
    yield client
    await client.aclose()


async def started(store: RedisStore, run_id: str) -> None:
    await store.create_run(NewRun(run_id=run_id, workflow="wf", input={}), event(run_id, 1, ev.RUN_QUEUED))
    await store.begin_attempt(run_id)


async def test_a_step_commit_returns_once_the_replica_has_it(
    master: aioredis.Redis, pair: tuple[EmbeddedServer, EmbeddedServer]
) -> None:
    store = RedisStore(master, commit_wait="replicas:1")
    await started(store, "r1")
    assert await store.append("r1", 1, [AppendItem(2, event("r1", 2), (STEP,))]) == 2
    assert (store.commit_wait.waits, store.commit_wait.shortfalls) == (1, 0)
    # Read from the replica itself: acknowledged means it is there already.
    replica = aioredis.Redis(port=pair[1].port)
    try:
        assert await replica.hget(run_keys("r1").steps, "0") == b'{"result": 1}'
        assert await replica.xlen(run_keys("r1").events) == 2
    finally:
        await replica.aclose()
    await store.append("r1", 1, [AppendItem(3, event("r1", 3))])  # a status line: no wait
    assert store.commit_wait.waits == 1


async def test_commits_made_together_share_one_wait(master: aioredis.Redis) -> None:
    store = RedisStore(master, commit_wait="replicas:1")
    runs = [f"g{i}" for i in range(50)]
    for run_id in runs:
        await started(store, run_id)
    before = await wait_calls(master)
    await asyncio.gather(*(store.append(r, 1, [AppendItem(2, event(r, 2), (STEP,))]) for r in runs))
    assert store.commit_wait.waits == 50
    assert store.commit_wait.shortfalls == 0
    assert await wait_calls(master) - before < 50  # group commit: one WAIT per write to the socket


async def wait_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def test_without_the_multiplexer_the_pair_is_one_pipeline(
    pair: tuple[EmbeddedServer, EmbeddedServer],
) -> None:
    client = aioredis.Redis(port=pair[0].port)  # not made by redis_from_url: no multiplexer
    try:
        await client.flushdb()
        store = RedisStore(client, commit_wait="replicas:1")
        await started(store, "p1")
        await client.script_flush()  # the server forgot the script: loaded and called again
        assert await store.append("p1", 1, [AppendItem(2, event("p1", 2), (STEP,))]) == 2
        assert (store.commit_wait.waits, store.commit_wait.shortfalls) == (1, 0)
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_a_wait_that_falls_short_leaves_the_commit_standing_and_says_so(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # The suite's server has no replica: WAIT 1 times out, the commit is on the master anyway.
    store = RedisStore(redis, commit_wait="replicas:1:20")
    await started(store, "s1")
    with caplog.at_level(logging.WARNING, logger="outlast.store"):
        assert await store.append("s1", 1, [AppendItem(2, event("s1", 2), (STEP,))]) == 2
    assert store.commit_wait.shortfalls == 1
    assert "0 of 1 replicas" in caplog.text
    assert "the commit stands" in caplog.text
    assert await redis.hget(run_keys("s1").steps, "0") == b'{"result": 1}'


async def test_a_run_ended_by_finish_waits_too(master: aioredis.Redis, tmp_path: Path) -> None:
    store = RedisStore(master)
    await started(store, "f1")
    leases = RunLeases(master, commit_wait="aof:1:1")
    assert (await leases.cancel_unleased("f1", 1))[0] == "ok"
    assert (leases.commit_wait.waits, leases.commit_wait.shortfalls) == (1, 0)
    assert (await store.get_run("f1")).status == RunStatus.CANCELLED


async def test_commits_made_while_a_wait_is_in_flight_share_the_next_one(redis: aioredis.Redis) -> None:
    # The suite's server has no replica: each WAIT 1 lasts its whole timeout, holding up the
    # connection. Commits written meanwhile must not each queue a wait of their own behind it.
    store = RedisStore(redis, commit_wait="replicas:1:1000")
    runs = [f"q{i}" for i in range(11)]
    for run_id in runs:
        await started(store, run_id)
    before = await wait_calls(redis)
    first = asyncio.ensure_future(store.append(runs[0], 1, [AppendItem(2, event(runs[0], 2), (STEP,))]))
    for _ in range(2000):  # until its WAIT is in flight (polling the server: it has no event)
        if int((await redis.info("clients"))["blocked_clients"]):
            break
        await asyncio.sleep(0.005)
    later = []
    for run_id in runs[1:]:  # one per event-loop turn
        later.append(
            asyncio.ensure_future(store.append(run_id, 1, [AppendItem(2, event(run_id, 2), (STEP,))]))
        )
        await asyncio.sleep(0)
    assert await asyncio.gather(first, *later) == [2] * len(runs)
    assert await wait_calls(redis) - before == 2
    assert store.commit_wait.shortfalls == len(runs)  # and every commit stood


async def test_a_server_that_cannot_fsync_for_waitaof_is_refused_up_front(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "no-aof", appendonly=False) as server:
        client = redis_from_url(server.url)
        try:
            await RedisStore(client, commit_wait="replicas:1").check_commit_wait()  # WAIT: any server
            with pytest.raises(
                ConfigError, match="OUTLAST_COMMIT_WAIT=aof:1:0:1000: the server refused WAITAOF"
            ):
                await RedisStore(client, commit_wait="aof").check_commit_wait()
        finally:
            await client.aclose()
