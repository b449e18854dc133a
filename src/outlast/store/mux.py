"""One connection shared by concurrent callers, replies matched in order (auto-pipelining).

redis-py's asyncio client sends each command through its connection pool: a lock, a liveness
check that costs an event-loop turn, a retry wrapper, a stream reader and a timeout context. For
the script calls a worker makes per run (claim, append) that machinery costs more CPU than the
command itself (measured: about 40 % of a worker's CPU per one-step run). A Redis server answers
each connection's commands in order, so callers can share one connection: a request is written
at once when the connection is idle, or with the others made in the same event-loop turn, and
its future is resolved when its reply arrives. Parsing is hiredis, as in redis-py.

Only non-blocking commands belong here: a blocking read would hold up every caller behind it.
The one exception is a commit wait (``WAIT``/``WAITAOF``, bounded by its timeout, see
:meth:`Multiplexer.execute_then_wait`): callers whose commands went out in the same write share
one wait, placed after them. The store sends those on a multiplexer of their own, so a wait
holds up only other commits.
Connection parameters (host or socket path, credentials, database, timeouts) are taken from
the redis-py client the multiplexer serves, so both always talk to the same server the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterParser
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection


class ConnectFailed(redis_errors.ConnectionError):
    """The connection could not be opened: the command that needed it was not sent."""


class _ReplyError(Exception):
    """What hiredis hands back for an error reply (turned into redis-py's classes below)."""


def _error(reply: _ReplyError) -> redis_errors.RedisError:
    # redis-py's own mapping, so callers see the same classes and messages either way: LOADING
    # is BusyLoadingError and NOAUTH/WRONGPASS AuthenticationError (both ConnectionErrors,
    # which the store retries), NOSCRIPT NoScriptError, READONLY ReadOnlyError; and its cluster
    # client's (a cluster node's MOVED is MovedError, ASK AskError…; one server never sends them).
    error: redis_errors.RedisError = ClusterParser.parse_error(str(reply))
    return error


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, packed by hiredis; arguments redis-py refuses too (None, bool,
    containers) raise its DataError before anything is sent."""
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError as exc:
        raise redis_errors.DataError(f"cannot send {args[0]!r}: {exc}") from exc
    return packed


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(protocolError=redis_errors.InvalidResponse, replyError=_ReplyError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        # How long the server may stay silent while replies are owed. One timer per connection
        # (not one per call, which would cost what the multiplexer saves).
        self.timeout = timeout
        self._progress = 0.0  # loop time of the last reply, or since when every owed request is owed
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def expect(self, future: asyncio.Future[Any]) -> None:
        """Queue the future of a request about to be written."""
        if not self.waiting:
            self.restart_clock()
        self.waiting.append(future)

    def restart_clock(self) -> None:
        """Nothing older is owed: the server's silence is counted from now (and watched)."""
        loop = asyncio.get_running_loop()
        self._progress = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._progress + self.timeout, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if not self.waiting or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = self._progress + self.timeout
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._check)
            return
        silence = f"no reply from the server in {self.timeout:g} s"
        self.lost = redis_errors.TimeoutError(silence)
        if self.transport is not None:
            self.transport.abort()  # not close(): that would wait for a stuck write buffer to drain

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._progress = asyncio.get_running_loop().time()
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()
                if future.done():  # its caller was cancelled: the reply is dropped, order kept
                    continue
                if isinstance(reply, _ReplyError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)
        except (redis_errors.InvalidResponse, IndexError) as exc:
            # A reply we cannot parse, or one nobody asked for: the stream is out of step.
            self.lost = exc
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        error: redis_errors.RedisError
        if isinstance(self.lost, redis_errors.TimeoutError):
            error = self.lost
        else:
            reason = exc or self.lost or "closed"
            error = redis_errors.ConnectionError(f"connection to the server lost: {reason}")
        self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class Multiplexer:
    """Sends non-blocking commands for many concurrent callers over one connection.

    Owed replies fail with redis-py's ``TimeoutError`` once the server has been silent for the
    client's ``socket_timeout``, or ``reply_timeout`` when that is unset: only non-blocking
    commands travel here, so a long silence means a paused server or a dead network path (which
    TCP alone would notice only after many minutes), never a slow answer.
    """

    def __init__(self, pool: ConnectionPool, reply_timeout: float = 30.0) -> None:
        self._pool = pool
        self.reply_timeout = reply_timeout
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        #: Waits to send after the commands written so far (one per distinct wait command), and
        #: those sent and not yet answered: at most one of each is in flight.
        self._waits: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    @property
    def usable(self) -> bool:
        """True for plain TCP and Unix-socket connections that keep replies as bytes and log in
        with a fixed username/password. TLS and credential providers are left to redis-py (their
        options are not re-implemented here)."""
        kind = self._pool.connection_class
        options = self._pool.connection_kwargs
        special = bool(options.get("decode_responses")) or options.get("credential_provider") is not None
        plain = issubclass(kind, (Connection, UnixDomainSocketConnection)) and not issubclass(
            kind, SSLConnection
        )
        return plain and not special

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (bytes, int, list, None) or redis-py's exception classes."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        packed = pack(args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        idle = not protocol.waiting and not self._buffer
        protocol.expect(future)
        if idle and protocol.transport is not None:
            protocol.transport.write(packed)  # nothing else under way: no reason to wait
        else:
            self._buffer.append(packed)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        return await future

    async def execute_then_wait(
        self, wait: tuple[Any, ...], *args: Any, asking: bool = False
    ) -> tuple[Any, Any]:
        """Send one command followed, on this connection, by ``wait`` (``WAIT n ms`` or
        ``WAITAOF local n ms``, which cover every write the connection made before them): the
        command's reply and the wait's. Commands share waits (group commit): one wait follows
        the commands written in the same event-loop turn, and while a wait is in flight (the
        server holds up the connection until it ends) the commands written meanwhile share the
        next one, sent when it returns. The command's error, if any, is raised (its wait is still
        sent; a failed command wrote nothing to wait for). ``asking``: the command goes right
        after ``ASKING`` (a cluster node importing the slot, see :meth:`execute_asking`)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        packed = pack(args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if asking:
            asked: asyncio.Future[Any] = loop.create_future()
            asked.add_done_callback(_retrieved)  # (its error, if any, shows in the command's reply)
            protocol.expect(asked)
            packed = pack(("ASKING",)) + packed
        protocol.expect(future)
        self._buffer.append(packed)
        waited = self._waits.get(wait)
        if waited is None:
            waited = self._waits[wait] = loop.create_future()
            waited.add_done_callback(_retrieved)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        reply = await future
        return reply, await asyncio.shield(waited)  # shared: one caller's cancellation is its own

    async def execute_asking(self, *args: Any) -> Any:
        """``ASKING`` then one command, next to each other on this connection (a cluster node
        serves a key of a slot being migrated to it only right after ``ASKING``)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        loop = asyncio.get_running_loop()
        packed = pack(("ASKING",)) + pack(args)
        asking: asyncio.Future[Any] = loop.create_future()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.expect(asking)
        protocol.expect(future)
        self._buffer.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        results = await asyncio.gather(asking, future, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results[1]

    def _flush(self) -> None:
        # The buffer always belongs to the current connection: _connect empties it when it
        # replaces a lost one (whose callers were failed by connection_lost).
        self._flush_scheduled = False
        count, data, self._buffer = len(self._buffer), b"".join(self._buffer), []
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.lost is not None:
            waits, self._waits = self._waits, {}
            _fail_waits(waits)
            return
        sent = 0
        for command, waited in list(self._waits.items()):
            busy = self._inflight.get(command)
            if busy is not None and not busy.done():
                continue  # the commands just written will share the next one, sent when it returns
            del self._waits[command]
            protocol.expect(waited)  # after the commands it covers
            data += pack(command)
            self._inflight[command] = waited
            waited.add_done_callback(self._wait_ended)
            sent += 1
        if data:
            protocol.transport.write(data)
            if len(protocol.waiting) == count + sent:  # only these are owed: the silence starts now
                protocol.restart_clock()

    def _wait_ended(self, _waited: asyncio.Future[Any]) -> None:
        if (
            self._waits
            and not self._flush_scheduled
            and self._loop is not None
            and not self._loop.is_closed()
        ):
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or a new event loop (a connection cannot move between loops).
            if self._protocol is not None and self._protocol.transport is not None:
                _abandon(self._protocol.transport)
            self._protocol, self._connecting, self._loop = None, asyncio.Lock(), loop
            self._buffer, self._flush_scheduled = [], False
            _fail_waits(self._waits)
            self._waits, self._inflight = {}, {}
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            self._buffer = []  # requests buffered for a lost connection failed with it
            waits, self._waits = self._waits, {}
            _fail_waits(waits)
            self._protocol = await self._open()
            return self._protocol

    async def _open(self) -> _Protocol:
        # A redis-py connection object, never connected, holds the parameters as redis-py reads them.
        conn: Any = self._pool.make_connection()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        protocol = _Protocol(conn.socket_timeout or self.reply_timeout)
        try:
            async with asyncio.timeout(conn.socket_connect_timeout):
                if isinstance(conn, UnixDomainSocketConnection):
                    await loop.create_unix_connection(lambda: protocol, conn.path)
                else:
                    await loop.create_connection(lambda: protocol, conn.host, conn.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to the server: {exc}") from exc
        hello: list[tuple[Any, ...]] = []
        if conn.password is not None or conn.username is not None:
            hello.append(("AUTH", *[p for p in (conn.username, conn.password) if p is not None]))
        if conn.db:
            hello.append(("SELECT", conn.db))
        try:
            sock = protocol.transport.get_extra_info("socket") if protocol.transport is not None else None
            if getattr(conn, "socket_keepalive", False) and sock is not None:  # TCP only, as redis-py
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in (conn.socket_keepalive_options or {}).items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                except OSError as exc:
                    raise redis_errors.ConnectionError(f"cannot set socket_keepalive: {exc}") from exc
            for command in hello:
                future: asyncio.Future[Any] = loop.create_future()
                protocol.expect(future)  # a silent server times out here too
                if protocol.transport is not None:  # set by connection_made before create_* returns
                    protocol.transport.write(pack(command))
                await future
        except BaseException:  # refused credentials or database, or cancelled: not left open
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        return protocol

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._loop is not asyncio.get_running_loop():
            protocol, self._protocol = self._protocol, None
            if protocol is not None and protocol.transport is not None:
                _abandon(protocol.transport)
            return
        # Under the lock, so a connection being opened right now is closed too, not left behind.
        async with self._connecting or contextlib.nullcontext():
            protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def retire(self) -> None:
        """Close the connection once the replies owed on it now have arrived (callers under way
        get their answers; a later call opens a new connection)."""
        if self._loop is not asyncio.get_running_loop():
            await self.aclose()
            return
        async with self._connecting or contextlib.nullcontext():
            self._flush()  # requests buffered for this connection go out on it
            protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.transport is None:
            return
        owed = [future for future in protocol.waiting if not future.done()]
        if owed and protocol.lost is None:
            await asyncio.wait(owed)  # (the server's silence is bounded by the watchdog)
        protocol.transport.close()


def _abandon(transport: asyncio.Transport) -> None:
    """Close a connection made on an event loop no longer running (its transport cannot)."""
    try:
        transport.close()
    except RuntimeError:  # the loop is closed: end the connection so the server drops it now;
        sock = transport.get_extra_info("socket")  # the socket is freed with its transport
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _fail_waits(waits: dict[tuple[Any, ...], asyncio.Future[Any]]) -> None:
    """Waits whose commands were never sent (their connection was lost first)."""
    for waited in waits.values():
        if not waited.done():
            waited.set_exception(
                redis_errors.ConnectionError("connection to the server lost before the wait")
            )


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a wait nobody awaited any more (its callers failed) is not logged
