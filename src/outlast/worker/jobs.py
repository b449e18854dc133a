"""What a worker keeps per run, and small shared pieces of the compute plane."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from redis.asyncio.cluster import RedisCluster

from outlast.store.client import RedisClient
from outlast.store.cluster import cluster_url_of

if TYPE_CHECKING:
    from outlast.core.runner import Attempt


@dataclass(frozen=True)
class Lane:
    """Where runs come from: a work stream and the lease index of the runs taken from it."""

    stream: str
    index: str


@dataclass
class Job:
    """A run this worker executes (or launched), and what must be cleaned up after it."""

    run_id: str
    attempt_no: int
    lane: Lane
    task: asyncio.Task[None] | None = None
    attempt: Attempt | None = None
    entry_id: bytes | None = None  # work-stream entry still pending (acked once the run is indexed)
    indexed: bool = False  # listed in the lease index (removed from it when the run ends)
    launched: bool = False  # executed by a launched process, which holds the lease itself


# What handling a dispatched run came to (decides whether its queue entry may be acked).
STARTED, SETTLED, SKIPPED = "started", "settled", "skipped"


def redis_url_of(redis: RedisClient) -> str:
    """A URL for another connection to the same server (the heartbeat thread, launched runs):
    scheme (TLS), user, password and database kept; a ``redis+cluster://`` URL for a cluster."""
    if isinstance(redis, RedisCluster):
        return cluster_url_of(redis)
    kw = redis.connection_pool.connection_kwargs
    db = kw.get("db", 0)
    if "path" in kw:
        return f"unix://{kw['path']}?db={db}"
    scheme = "rediss" if "SSL" in redis.connection_pool.connection_class.__name__ else "redis"
    user, password = kw.get("username"), kw.get("password")
    auth = ""
    if user or password:
        auth = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@"
    # TLS settings given as URL parameters (rediss://…?ssl_ca_certs=…) go along too.
    tls = {name: kw[name] for name in _TLS_OPTIONS if kw.get(name) is not None}
    query = f"?{urlencode(tls)}" if tls and scheme == "rediss" else ""
    return f"{scheme}://{auth}{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{db}{query}"


_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
