"""The store's boundary with redis-py: its errors become the :class:`~outlast.errors.OutlastError`
tree here, and error replies are recognised by their code here, nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis import exceptions as redis_errors

from outlast.errors import StoreError, StoreUnavailable

T = TypeVar("T")

#: ``XGROUP CREATE`` of a group that exists.
BUSYGROUP = "BUSYGROUP"
#: A group read that the server does not know (it lost its data: a restart without persistence).
NOGROUP = "NOGROUP"


async def guard(pending: Awaitable[T] | T, what: str = "") -> T:
    """Await one store call, mapping redis-py errors into the OutlastError tree (``what``: the
    operation, named in the message).

    (redis-py's asyncio methods are typed ``Awaitable[X] | X``; at run time they are awaitable.)
    """
    try:
        return await cast(Awaitable[T], pending)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise StoreUnavailable(f"{what} failed: {exc}" if what else f"Redis unreachable: {exc}") from exc
    except redis_errors.RedisClusterException as exc:
        # The cluster client's own errors (not RedisErrors): no node answered, or a command
        # whose keys span slots (a bug: every multi-key command and script stays in one slot).
        if "cannot be connected" in str(exc):
            raise StoreUnavailable(
                f"{what} failed: {exc}" if what else f"Redis Cluster unreachable: {exc}"
            ) from exc
        raise StoreError(f"{what} failed: {exc}" if what else f"Redis Cluster error: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise StoreError(f"{what} failed: {exc}" if what else f"Redis error: {exc}") from exc


def reply_code(exc: BaseException) -> str:
    """The code of the server's error reply behind ``exc`` (``BUSYGROUP``, ``NOGROUP``, …), also
    when ``exc`` is the StoreError :func:`guard` raised from it; "" for any other error.

    redis-py gives the codes it knows their own classes and strips them from the message; the
    others (the stream-group ones among them) stay a ResponseError whose message starts with it.
    """
    error: BaseException | None = exc
    while error is not None and not isinstance(error, redis_errors.ResponseError):
        error = error.__cause__
    if error is None:
        return ""
    head = str(error).split(" ", 1)[0]
    return head if head.isupper() else ""


def text(value: Any) -> str:
    """A reply value (bytes from the server, or already a str/int) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
