"""A private Valkey *cluster* on loopback ports, from the same binary as :class:`EmbeddedServer`.

Used by the test suite (the ``cluster`` marker), the benchmarks and failover tests. Each node is
an :class:`EmbeddedServer` started with ``--cluster-enabled yes`` in a data dir of its own; the
cluster is formed with plain commands (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET``,
``CLUSTER REPLICATE``) rather than ``valkey-cli --cluster create``, so nothing but the server
binary is needed. ``masters`` nodes share the 16,384 slots evenly; each gets ``replicas`` replicas.

``cluster.url`` is a ``redis+cluster://`` URL listing every master as a seed node.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from outlast.errors import StoreUnavailable
from outlast.store.embedded import EmbeddedServer, free_port

SLOTS = 16384
#: How many sets of ports a node tries before the cluster gives up.
PORT_ATTEMPTS = 5


def _port_taken(log: Path, seen: int) -> bool:
    """Whether the server's log, past ``seen`` bytes, says it could not bind a port."""
    try:
        with log.open("rb") as file:
            file.seek(seen)
            text = file.read().decode(errors="replace")
    except OSError:
        return False
    return "Address already in use" in text


class EmbeddedCluster:
    """``masters`` masters (and ``replicas`` replicas each) of a Valkey cluster on loopback.

    ``node_timeout_ms`` is the cluster's failure-detection time: a killed master's replica is
    promoted roughly that long after the kill (tests use a short one).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        appendonly: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and a non-negative replica count")
        self.data_dir = Path(data_dir)
        self.start_timeout = start_timeout
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica may take over however long it was cut off (tests kill masters at will).
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
        ]  # fmt: skip

        self._bus_ports: dict[int, int] = {}

        def node(name: str) -> EmbeddedServer:
            # The bus port is given: the default (port + 10000) fails for ports above 55535.
            bus = free_port()
            args = [*cluster_args, "--cluster-port", str(bus)]
            server = EmbeddedServer(self.data_dir / name, appendonly=appendonly, extra_args=args)
            self._bus_ports[server.port] = bus
            return server

        self.masters = [node(f"m{i}") for i in range(masters)]
        self.replicas = [node(f"m{i}r{j}") for i in range(masters) for j in range(replicas)]
        self._replicas_per_master = replicas
        self._clients: dict[int, redis.Redis] = {}

    @property
    def nodes(self) -> list[EmbeddedServer]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node that runs as a seed (any one is enough)."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes if node.running)
        return f"redis+cluster://{seeds}"

    def start(self) -> EmbeddedCluster:
        try:
            for node in self.nodes:
                self._start_node(node)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, node: EmbeddedServer) -> None:
        """Start ``node``, again on fresh ports if its port or bus port was taken meanwhile: they
        were free when picked, but not held (another process may bind them before the server)."""
        for _ in range(PORT_ATTEMPTS):
            log = node.data_dir / "server.log"
            seen = log.stat().st_size if log.exists() else 0
            try:
                node.start()
            except StoreUnavailable:
                if not _port_taken(log, seen):
                    raise
            else:
                if self._answers_itself(node):
                    return
                node.kill()  # another server answered on its port; it exits (or would) on its own
            self._new_ports(node)
        raise StoreUnavailable(f"the local cluster did not come up: no free ports in {PORT_ATTEMPTS} tries")

    def _answers_itself(self, node: EmbeddedServer) -> bool:
        """Whether the server answering on ``node.port`` is ``node``'s process."""
        try:
            pid = self._cmd(node, "INFO", "server").get("process_id")
        except redis.RedisError:
            return False
        return node.process is not None and pid == node.process.pid and node.running

    def _new_ports(self, node: EmbeddedServer) -> None:
        client = self._clients.pop(node.port, None)
        if client is not None:
            client.close()
        self._bus_ports.pop(node.port, None)
        node.port, bus = free_port(), free_port()
        node.extra_args[node.extra_args.index("--cluster-port") + 1] = str(bus)
        self._bus_ports[node.port] = bus
        (node.data_dir / "nodes.conf").unlink(missing_ok=True)  # (it named the old ports)

    def _form(self) -> None:
        per = SLOTS // len(self.masters)
        for i, node in enumerate(self.masters):
            low, high = i * per, (SLOTS - 1 if i == len(self.masters) - 1 else (i + 1) * per - 1)
            self._cmd(node, "CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in self.nodes[1:]:
            self._cmd(self.masters[0], "CLUSTER", "MEET", "127.0.0.1", node.port, self._bus_ports[node.port])
        self._wait(lambda: all(self._known(node) >= len(self.nodes) for node in self.nodes), "nodes to meet")
        for index, replica in enumerate(self.replicas):
            master = self.masters[index // self._replicas_per_master]
            master_id = self._cmd(master, "CLUSTER", "MYID")
            self._wait(partial(self._knows, replica, master_id), "replicas to learn their master")
            self._cmd(replica, "CLUSTER", "REPLICATE", master_id)
        self._wait(self.healthy, "the cluster to be ok")

    def healthy(self) -> bool:
        """Every running node says ``cluster_state:ok`` and every replica has synced."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                text = self._cmd(node, "CLUSTER", "INFO")
                if "cluster_state:ok" not in text:
                    return False
                if node in self.replicas:
                    repl = self._cmd(node, "INFO", "replication")
                    if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        return False
            except redis.RedisError:
                return False
        return True

    def master_of(self, key: str) -> EmbeddedServer:
        """The node that now serves ``key``'s slot as master."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                slot = self._cmd(node, "CLUSTER", "KEYSLOT", key)
                for low, high, master, *_ in self._cmd(node, "CLUSTER", "SLOTS"):
                    if low <= slot <= high:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            except redis.RedisError:
                continue
        raise StoreUnavailable(f"no running node knows the master of {key!r}")

    def wait_for_promotion(self, killed: EmbeddedServer, timeout: float = 30.0) -> EmbeddedServer:
        """After ``killed`` (a master) was killed: wait until one of its replicas serves its
        slots and the cluster is ok again; the promoted node."""
        port = killed.port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.replicas:
                if node.running and node.port != port:
                    try:
                        role = self._cmd(node, "INFO", "replication").get("role")
                    except redis.RedisError:
                        continue
                    if role == "master" and self._serves_slots(node) and self.healthy():
                        return node
            time.sleep(0.05)  # polling the cluster's own failover; it offers no event to await
        raise StoreUnavailable(f"no replica of 127.0.0.1:{port} was promoted within {timeout}s")

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for node in self.nodes:
            node.stop()

    def _serves_slots(self, node: EmbeddedServer) -> bool:
        node_id = self._cmd(node, "CLUSTER", "MYID")
        return any(master[2] == node_id for _low, _high, master, *_ in self._cmd(node, "CLUSTER", "SLOTS"))

    def _known(self, node: EmbeddedServer) -> int:
        text: str = self._cmd(node, "CLUSTER", "NODES")
        return sum(1 for line in text.splitlines() if line.strip() and "handshake" not in line)

    def _knows(self, node: EmbeddedServer, node_id: str) -> bool:
        return node_id in self._cmd(node, "CLUSTER", "NODES")

    def _cmd(self, node: EmbeddedServer, *args: str | int) -> Any:
        return self._client(node).execute_command(*args)  # type: ignore[no-untyped-call]

    def _client(self, node: EmbeddedServer) -> redis.Redis:
        client = self._clients.get(node.port)
        if client is None:
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, decode_responses=True)
            self._clients[node.port] = client
        return client

    def _wait(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)  # polling cluster gossip, which offers no event to await
        raise StoreUnavailable(f"the local cluster did not come up: timed out waiting for {what}")

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
