"""Redis / Valkey Cluster URLs: ``redis+cluster://[user:password@]host:port[,host:port…][?option=…]``
(``rediss+cluster://`` for TLS), and the redis-py cluster clients made from them.

The hosts are *seed* nodes: any one that answers is enough, the client learns the others (and
which node serves which hash slot) from it. Options in the query string are redis-py's, as in a
``redis://`` URL (``socket_timeout``, ``ssl_ca_certs``…). A cluster has one database: a path other
than ``/`` or ``/0`` is refused.

The clients are redis-py's own (:class:`redis.asyncio.cluster.RedisCluster`, and the synchronous
:class:`redis.cluster.RedisCluster` for the heartbeat thread): each command and each script call
goes straight to the master of its keys' slot, one round trip, as on a single server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import redis.cluster as sync_cluster
from redis.asyncio import connection as async_connection
from redis.asyncio.cluster import ClusterNode, RedisCluster

from outlast.errors import ConfigError
from outlast.store.node_mux import NodeMultiplexers

#: Cluster URL scheme → whether it speaks TLS.
SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_SPLIT = re.compile(r"^([^/?#]*)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class ClusterURL:
    """A parsed cluster URL: seed nodes, and redis-py options (credentials, TLS, query string)."""

    seeds: list[tuple[str, int]]
    tls: bool
    options: dict[str, Any] = field(default_factory=dict)


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """The seeds and options of a ``redis+cluster://`` URL; ConfigError saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    shown = _redacted(url)
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(f"{shown!r} is not a cluster URL; expected redis+cluster://host:port[,host:port…]")
    match = _SPLIT.match(rest)
    netloc, tail = (match.group(1), match.group(2)) if match else (rest, "")
    auth, at, hosts = netloc.rpartition("@")
    if not hosts.strip():
        raise ConfigError(f"cluster URL {shown!r} names no seed node; expected host:port[,host:port…]")
    seeds = [_seed(item.strip(), shown) for item in hosts.split(",")]
    path = tail.partition("?")[0].partition("#")[0]
    if path not in ("", "/", "/0"):
        raise ConfigError(f"cluster URL {shown!r}: a cluster has only database 0 (remove {path!r})")
    tls = SCHEMES[scheme.lower()]
    first_host, first_port = seeds[0]
    plain = f"{'rediss' if tls else 'redis'}://{auth}{at}{_netloc(first_host, first_port)}{tail}"
    try:
        options: dict[str, Any] = dict(async_connection.parse_url(plain))
    except ValueError as exc:
        raise ConfigError(f"cluster URL {shown!r}: {exc}") from None
    for name in ("host", "port", "db", "connection_class"):
        options.pop(name, None)
    return ClusterURL(seeds, tls, options)


def _seed(item: str, shown: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:7000
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"cluster URL {shown!r}: seed {item!r} is not host:port (every seed needs its port)"
        )
    return host, int(port)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    auth, at, _ = rest.partition("/")[0].rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{rest[len(auth) + 1 :]}"


class OutlastCluster(RedisCluster):
    """redis-py's cluster client, plus a multiplexed connection per master for the store's hot
    path and another for commits followed by WAIT/WAITAOF
    (:class:`~outlast.store.node_mux.NodeMultiplexers`), closed with it; and, for a cluster whose
    connections those do not serve (TLS…), single-server clients of its masters for the commits
    (see :mod:`outlast.store.node_commits`).

    redis-py also closes its client itself to force a fresh slot map after a connection error;
    the multiplexed connections are then closed once their owed replies arrive, not cut short,
    and opened again by the next calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.multiplexers = NodeMultiplexers(self)
        self.commit_clients: dict[str, Any] = {}

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            try:
                await self.multiplexers.aclose()
            finally:
                clients, self.commit_clients = self.commit_clients, {}
                for client in clients.values():
                    await client.aclose()


def cluster_from_url(url: str, **options: Any) -> RedisCluster:
    """An asyncio cluster client for ``url``; ``options`` (timeouts, ``max_connections`` per node)
    are redis-py's. ConfigError for a bad URL or option."""
    parsed = parse_cluster_url(url)
    nodes = [ClusterNode(host, port) for host, port in parsed.seeds]
    try:
        client: RedisCluster = OutlastCluster(  # type: ignore[abstract]
            startup_nodes=nodes, ssl=parsed.tls, **{**parsed.options, **options}
        )
    except TypeError as exc:  # an option (from the query string) redis-py does not take
        raise ConfigError(f"cluster URL {_redacted(url)!r}: {exc}") from None
    return client


def sync_cluster_from_url(url: str, **options: Any) -> sync_cluster.RedisCluster:
    """The same, with redis-py's synchronous cluster client (the heartbeat thread's)."""
    parsed = parse_cluster_url(url)
    nodes = [sync_cluster.ClusterNode(host, port) for host, port in parsed.seeds]  # type: ignore[no-untyped-call]
    try:
        client: sync_cluster.RedisCluster = sync_cluster.RedisCluster(
            startup_nodes=nodes, ssl=parsed.tls, **{**parsed.options, **options}
        )
    except TypeError as exc:
        raise ConfigError(f"cluster URL {_redacted(url)!r}: {exc}") from None
    return client


def cluster_url_of(client: RedisCluster) -> str:
    """A URL for another client of the same cluster (credentials and TLS settings kept)."""
    kw = client.get_connection_kwargs()
    tls = "SSL" in getattr(kw.get("connection_class"), "__name__", "")
    user, password = kw.get("username"), kw.get("password")
    auth = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@" if user or password else ""
    seeds = ",".join(_netloc(node.host, int(node.port)) for node in client.get_nodes())
    names = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
    query = {name: kw[name] for name in names if tls and kw.get(name) is not None}
    return f"{'rediss' if tls else 'redis'}+cluster://{auth}{seeds}" + (
        f"?{urlencode(query)}" if query else ""
    )
