"""Outlast's asyncio clients pack commands with hiredis and behave as redis-py's own."""

from __future__ import annotations

# Not cluster-marked: these check the single-server client's pool (hiredis packing, its
# multiplexer); the cluster client's commands are exercised by every cluster-marked module.
import asyncio
import time

import pytest
from redis.exceptions import DataError

from outlast.store.client import HiredisConnection, redis_from_url


async def test_commands_round_trip_through_hiredis_packing(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        assert client.connection_pool.connection_class is HiredisConnection
        await client.flushdb()
        payload = bytes(range(256)) * 100  # binary and larger than redis-py's buffer cutoff
        await client.set("bin", payload)
        assert await client.get("bin") == payload
        await client.hset("h", mapping={"s": "é", "i": 7, "f": 0.30000000000000004})
        assert await client.hgetall("h") == {b"s": "é".encode(), b"i": b"7", b"f": b"0.30000000000000004"}
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await script(keys=["k"], args=[1.5, b"x"]) == [b"k", b"1.5", b"x"]
        pipe = client.pipeline(transaction=True)
        pipe.incr("n")
        pipe.incr("n")
        assert await pipe.execute() == [1, 2]
        assert (await client.config_get("appendonly"))["appendonly"] in ("yes", "no")  # "CONFIG GET"
        with pytest.raises(DataError):
            await client.set("none", None)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_a_capped_pool_hands_connections_round_robin(redis_url: str) -> None:
    """Three tails looping on blocking reads (as the API's feeds do) share two connections: each
    gets its turns. (redis-py's own hand-over lets a releasing task take its connection straight
    back, so the third tail got one turn in the whole period.)"""
    client = redis_from_url(redis_url, max_connections=2, wait_for_connection=10.0)
    turns = [0, 0, 0]
    until = time.monotonic() + 1.5

    async def tail(i: int) -> None:
        while time.monotonic() < until:
            await client.xread({f"fair:{i}": "$"}, block=100)
            turns[i] += 1

    try:
        await asyncio.gather(*(tail(i) for i in range(3)))
    finally:
        await client.aclose()
    assert min(turns) >= 3, turns
