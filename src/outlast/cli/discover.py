"""Which store and which API a command talks to, and saying so.

In order: the ``--redis`` / ``--api`` option; else ``$OUTLAST_REDIS_URL`` / ``$OUTLAST_API_URL``;
else the ``outlast dev`` running for this folder (``.outlast/dev.json``, written by it and checked
against its pid), else the ``outlast server`` running for this folder (its data-dir lock file records
its pid and port). Never a new, empty private Valkey: that would silently show no runs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from outlast.errors import ConfigError, StoreUnavailable
from outlast.store.client import RedisClient
from outlast.store.cluster import is_cluster_url, parse_cluster_url
from outlast.store.connect import ENV_URL
from outlast.store.embedded import DEFAULT_DATA_DIR

ENV_API = "OUTLAST_API_URL"
ENV_API_KEY = "OUTLAST_API_KEY"
STATE_DIR = Path(".outlast")
DEV_FILE = STATE_DIR / "dev.json"
_LOCK = re.compile(r"pid (\d+) \(port (\d+)\)")
_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


@dataclass(frozen=True)
class Found:
    """A URL and where it came from (``None``: given on the command line, nothing to say)."""

    url: str
    source: str | None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_redis_url(url: str, where: str = "--redis") -> str:
    """``url`` if it looks like a Redis URL (or a ``redis+cluster://`` one), else a ConfigError
    saying what one looks like."""
    if is_cluster_url(url):
        try:
            parse_cluster_url(url)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return url
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(
            f"{where} {url!r} is not a Redis URL; expected e.g. redis://127.0.0.1:6379/0 "
            "(or redis+cluster://host:port,host:port for a cluster)"
        )
    return url


def check_api_url(url: str, where: str = "--api") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} {url!r} is not an HTTP URL; expected e.g. http://127.0.0.1:8000")
    return url.rstrip("/")


def read_dev_file(folder: Path = Path()) -> dict[str, object] | None:
    """What the ``outlast dev`` of ``folder`` recorded, if it is still running."""
    try:
        info = json.loads((folder / DEV_FILE).read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) and pid_alive(pid) else None


def _server_in_folder(folder: Path) -> tuple[int, int] | None:
    """(pid, port) of the ``outlast server`` / ``outlast dev`` holding this folder's data dir."""
    try:
        text = (folder / DEFAULT_DATA_DIR / "outlast.lock").read_text()
    except OSError:
        return None
    match = _LOCK.search(text)
    if match is None or not pid_alive(int(match.group(1))):
        return None
    return int(match.group(1)), int(match.group(2))


_NO_STORE = (
    "no Outlast store found: start `outlast dev` (or `outlast server`) in this folder, "
    f"or pass --redis URL / set {ENV_URL}"
)
_NO_API = (
    f"no Outlast API found: start `outlast dev` in this folder, or pass --api URL / set {ENV_API} "
    "(`outlast api` serves one)"
)


def _given(
    option: str | None, env: str, key: str, check: Callable[[str, str], str], folder: Path
) -> Found | None:
    """The option, else the environment variable, else this folder's ``outlast dev`` (its ``key``)."""
    if option:
        return Found(check(option, "--redis" if key == "redis_url" else "--api"), None)
    value = os.environ.get(env)
    if value:
        return Found(check(value, f"${env}"), f"${env}")
    dev = read_dev_file(folder)
    if dev is not None and isinstance(dev.get(key), str):
        return Found(str(dev[key]), f"the outlast dev of this folder, pid {dev['pid']}")
    return None


def find_redis(option: str | None, folder: Path = Path()) -> Found:
    """The Redis URL a command should use (see the module docstring); StoreUnavailable if none."""
    found = _given(option, ENV_URL, "redis_url", check_redis_url, folder)
    if found is not None:
        return found
    server = _server_in_folder(folder)
    if server is not None:
        pid, port = server
        return Found(f"redis://127.0.0.1:{port}/0", f"the outlast server of this folder, pid {pid}")
    raise StoreUnavailable(_NO_STORE)


def find_api(option: str | None, folder: Path = Path()) -> Found:
    """The API base URL a command should use; StoreUnavailable if none is configured or running."""
    found = _given(option, ENV_API, "api_url", check_api_url, folder)
    if found is None:
        raise StoreUnavailable(_NO_API)
    return found


@asynccontextmanager
async def connect(option: str | None) -> AsyncIterator[RedisClient]:
    """A client of the store :func:`find_redis` picks (said on stderr when not given explicitly)."""
    from outlast.cli.main import note
    from outlast.store.connect import connect as open_store

    found = find_redis(option)
    if found.source:
        note(f"using Redis {found.url} ({found.source})")
    async with open_store(found.url) as client:
        yield client
