"""The multiplexed connection: many callers, one socket, every reply to its own caller."""

from __future__ import annotations

# Not cluster-marked: the multiplexer speaks to one server (a cluster client has one per master,
# tested in test_cluster_mux.py), and some tests here stop or pause that server.
import asyncio
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.credentials import UsernamePasswordCredentialProvider

from outlast.errors import StoreUnavailable
from outlast.store.client import multiplexer_of, redis_from_url
from outlast.store.commands import HotPath
from outlast.store.embedded import EmbeddedServer, find_server_binary, free_port
from outlast.store.errors import guard
from outlast.store.mux import Multiplexer


def _mux(client: aioredis.Redis) -> Multiplexer:
    mux = multiplexer_of(client)
    if mux is None:
        raise AssertionError("a client from redis_from_url has a multiplexer")
    return mux


@pytest.mark.redis7
async def test_concurrent_callers_each_get_their_own_reply(redis: aioredis.Redis) -> None:
    mux = _mux(redis)
    writes = await asyncio.gather(*(mux.execute("SET", f"k{i}", f"v{i}") for i in range(500)))
    assert writes == [b"OK"] * 500
    # Mixed reply types in one burst: bulk strings, integers, arrays and nils.
    calls = []
    for i in range(500):
        calls += [mux.execute("GET", f"k{i}"), mux.execute("INCRBY", "n", i), mux.execute("GET", f"none{i}")]
    calls.append(mux.execute("MGET", "k1", "k2"))
    replies = await asyncio.gather(*calls)
    assert replies[0:-1:3] == [f"v{i}".encode() for i in range(500)]
    assert replies[1:-1:3] == [sum(range(i + 1)) for i in range(500)]
    assert replies[2:-1:3] == [None] * 500
    assert replies[-1] == [b"v1", b"v2"]
    assert await redis.get("n") == str(sum(range(500))).encode()  # the same server redis-py sees


async def test_error_replies_reach_their_caller_and_the_connection_goes_on(redis: aioredis.Redis) -> None:
    mux = _mux(redis)
    await mux.execute("SET", "s", "text")
    wrong, after = await asyncio.gather(
        mux.execute("HGET", "s", "f"), mux.execute("GET", "s"), return_exceptions=True
    )
    assert isinstance(wrong, redis_errors.ResponseError)
    assert "WRONGTYPE" in str(wrong)
    assert after == b"text"
    with pytest.raises(redis_errors.NoScriptError):
        await mux.execute("EVALSHA", "0" * 40, 0)
    assert await mux.execute("PING") == b"PONG"


async def test_a_cancelled_caller_does_not_shift_the_replies_of_others(redis: aioredis.Redis) -> None:
    mux = _mux(redis)
    await mux.execute("SET", "warm", "1")  # connected, so the calls below queue behind each other
    tasks = [asyncio.ensure_future(mux.execute("INCRBY", f"c{i}", i + 1)) for i in range(200)]
    await asyncio.sleep(0)  # every call is written and waits for its reply
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 2:
            assert result == i + 1
        else:
            assert isinstance(result, asyncio.CancelledError)
    # The cancelled commands were sent: the server ran them, and later calls still line up.
    assert await mux.execute("GET", "c0") == b"1"
    assert await mux.execute("MGET", "c3", "c4") == [b"4", b"5"]


async def test_error_replies_map_to_redis_pys_classes(redis: aioredis.Redis) -> None:
    # The same classes redis-py's own parser gives, so callers handle both paths alike: a
    # server still loading its data or asking for credentials is unavailable (retried), not
    # a script bug. A script's error_reply is a real server sending each of these replies.
    mux = _mux(redis)
    cases = {
        "LOADING Redis is loading the dataset in memory": redis_errors.BusyLoadingError,
        "NOAUTH Authentication required.": redis_errors.AuthenticationError,
        "READONLY You can't write against a read only replica.": redis_errors.ReadOnlyError,
        "NOSCRIPT No matching script.": redis_errors.NoScriptError,
        "ERR something else": redis_errors.ResponseError,
    }
    for reply, kind in cases.items():
        with pytest.raises(kind) as raised:
            await mux.execute("EVAL", "return redis.error_reply(ARGV[1])", 0, reply)
        assert type(raised.value) is kind
        assert str(raised.value) in reply
    with pytest.raises(StoreUnavailable, match="loading"):
        await guard(mux.execute("EVAL", "return redis.error_reply(ARGV[1])", 0, "LOADING loading"))
    with pytest.raises(redis_errors.DataError, match="SET"):
        await mux.execute("SET", "k", None)  # what redis-py refuses too, before anything is sent
    assert await mux.execute("PING") == b"PONG"


async def test_scripts_the_server_lost_are_loaded_again(redis: aioredis.Redis) -> None:
    hot = HotPath(redis)
    script = redis.register_script("return ARGV[1] .. KEYS[1]")
    assert await hot.script(script, ["k"], ["v"]) == b"vk"
    await redis.script_flush()
    assert await hot.script(script, ["k2"], ["w"]) == b"wk2"


async def test_a_client_not_made_by_outlast_goes_through_redis_py(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    try:
        assert multiplexer_of(plain) is None
        hot = HotPath(plain)
        await plain.hset("h", mapping={"a": "1"})
        assert await hot.hgetall("h") == {b"a": b"1"}
        assert await hot.script(plain.register_script("return 7"), [], []) == 7
    finally:
        await plain.aclose()


async def test_multiplexing_can_be_switched_off(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The escape hatch (and the A/B bench's baseline): OUTLAST_MULTIPLEX=0 sends everything
    # through redis-py, with the same results.
    client = redis_from_url(redis_url)
    try:
        monkeypatch.setenv("OUTLAST_MULTIPLEX", "0")
        assert multiplexer_of(client) is None
        hot = HotPath(client)
        assert await hot.script(client.register_script("return ARGV[1]"), [], ["x"]) == b"x"
        monkeypatch.setenv("OUTLAST_MULTIPLEX", "1")
        assert multiplexer_of(client) is not None
    finally:
        await client.aclose()


def test_tls_decoding_and_credential_provider_clients_are_not_multiplexed() -> None:
    # Replies must stay bytes (the store decodes them itself), and TLS is left to redis-py.
    assert not _mux(redis_from_url("rediss://127.0.0.1:1/0")).usable
    assert not _mux(redis_from_url("redis://127.0.0.1:1/0", decode_responses=True)).usable
    provider = UsernamePasswordCredentialProvider("user", "secret")
    assert not _mux(redis_from_url("redis://127.0.0.1:1/0", credential_provider=provider)).usable
    assert _mux(redis_from_url("redis://127.0.0.1:1/0")).usable


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedServer, aioredis.Redis]]:
    """A Valkey of this test's own (to kill and restart) and a client to it."""
    server = EmbeddedServer(tmp_path / "data")
    server.start()
    client = redis_from_url(server.url)
    try:
        yield server, client
    finally:
        await client.aclose()
        server.stop()


async def test_server_killed_fails_pending_calls_then_reconnects(
    private: tuple[EmbeddedServer, aioredis.Redis],
) -> None:
    server, client = private
    mux = _mux(client)
    await mux.execute("SET", "kept", "yes")
    await mux.execute("CONFIG", "SET", "appendfsync", "always")  # the write survives a kill
    await mux.execute("SET", "kept", "still")
    # A call under way when the server dies fails as "unreachable", not with a hang. (A
    # blocking pop never belongs on this connection; here it is simply a call held open.)
    busy = asyncio.ensure_future(guard(mux.execute("BLPOP", "nothing", 0)))
    await asyncio.sleep(0)  # one loop turn: the call is written
    server.kill()
    with pytest.raises(StoreUnavailable):
        await busy
    with pytest.raises(StoreUnavailable):
        await guard(mux.execute("GET", "kept"))  # down: refused at once
    server.start()
    assert await mux.execute("GET", "kept") == b"still"  # reconnected on its own


@pytest.mark.parametrize("configured", ["socket_timeout", "default"])
async def test_a_silent_server_times_out(tmp_path: Path, configured: str) -> None:
    # A server that stops answering (paused, a network partition) must not hang the store's
    # callers: owed replies fail once the server has been silent for the client's
    # socket_timeout (or the multiplexer's own reply_timeout when that is unset), and the next
    # call reconnects.
    server = EmbeddedServer(tmp_path / "data")
    server.start()
    if configured == "socket_timeout":
        client = redis_from_url(server.url, socket_timeout=0.5)
    else:
        client = redis_from_url(server.url)
        _mux(client).reply_timeout = 0.5  # 30 s by default
    process = server.process
    if process is None:
        raise AssertionError("the server runs")
    try:
        mux = _mux(client)
        assert await mux.execute("SET", "k", "v") == b"OK"
        process.send_signal(signal.SIGSTOP)
        try:
            calls = [asyncio.ensure_future(guard(mux.execute("GET", "k"))) for _ in range(3)]
            for call in calls:
                with pytest.raises(StoreUnavailable, match=r"no reply from the server in 0\.5 s"):
                    await asyncio.wait_for(call, 10)
        finally:
            process.send_signal(signal.SIGCONT)
        assert await mux.execute("GET", "k") == b"v"  # a new connection
    finally:
        await client.aclose()
        server.stop()


@pytest.fixture
def protected_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Valkey with a password, listening on a loopback port and on a Unix socket."""
    sock = tmp_path / "valkey.sock"
    port = free_port()
    proc = subprocess.Popen(
        [find_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
         "--requirepass", "s3cret", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, sock
    finally:
        proc.kill()
        proc.wait()


async def test_password_database_and_unix_socket(protected_server: tuple[int, Path]) -> None:
    port, sock = protected_server
    for url in (f"redis://:s3cret@127.0.0.1:{port}/3", f"unix://{sock}?db=3&password=s3cret"):
        client = redis_from_url(url)
        try:
            for _ in range(200):  # the server is starting: no readiness event to await
                try:
                    await client.ping()
                    break
                except redis_errors.ConnectionError:
                    await asyncio.sleep(0.02)
            mux = _mux(client)
            await mux.execute("SET", "where", url)
            assert await client.get("where") == url.encode()  # same database as redis-py's
            assert await client.dbsize() == 1
        finally:
            await client.aclose()
    wrong = redis_from_url(f"redis://:nope@127.0.0.1:{port}/0")
    try:
        # redis-py's class for it: a ConnectionError the store reports as unavailable.
        with pytest.raises(redis_errors.AuthenticationError):
            await _mux(wrong).execute("PING")
    finally:
        await wrong.aclose()


def test_one_client_across_event_loops(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    mux = _mux(client)
    for n in range(2):  # e.g. a sync wrapper that runs a fresh loop per call
        with asyncio.Runner() as runner:
            assert runner.run(mux.execute("SET", "loop", n)) == b"OK"
            assert runner.run(mux.execute("GET", "loop")) == str(n).encode()
            runner.run(client.aclose())


async def test_calls_made_while_reconnecting_are_all_sent(
    private: tuple[EmbeddedServer, aioredis.Redis],
) -> None:
    server, client = private
    mux = _mux(client)
    assert await mux.execute("PING") == b"PONG"
    # Several calls in one loop turn: the first goes out at once, the rest are buffered.
    pending = [asyncio.ensure_future(guard(mux.execute("BLPOP", "nothing", 0)))]
    pending += [asyncio.ensure_future(guard(mux.execute("PING"))) for _ in range(3)]
    await asyncio.sleep(0)
    server.kill()
    for call in pending:
        with pytest.raises(StoreUnavailable):
            await call
    server.start()
    # A burst right after the reconnect: none may be left behind in a stale buffer.
    replies = await asyncio.wait_for(asyncio.gather(*(mux.execute("INCR", "n") for _ in range(50))), 10)
    assert sorted(replies) == list(range(1, 51))


async def test_socket_keepalive_is_set_as_redis_py_would(redis_url: str) -> None:
    client = redis_from_url(redis_url, socket_keepalive=True)
    try:
        mux = _mux(client)
        assert await mux.execute("PING") == b"PONG"
        protocol = mux._protocol
        if protocol is None or protocol.transport is None:
            raise AssertionError("connected")
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        await client.aclose()


async def test_a_keepalive_option_the_system_refuses_is_a_connection_error(redis_url: str) -> None:
    client = redis_from_url(redis_url, socket_keepalive=True, socket_keepalive_options={99999: 1})
    try:
        with pytest.raises(redis_errors.ConnectionError, match="socket_keepalive"):
            await _mux(client).execute("PING")
        assert _mux(client)._protocol is None  # nothing half-open kept for the next call
    finally:
        await client.aclose()
