"""``gather``: await many steps concurrently, at most ``limit`` at a time, results in call order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from outlast.errors import ConfigError

T = TypeVar("T")


async def gather(
    *calls: Awaitable[T], limit: int | None = None, return_exceptions: bool = False
) -> list[Any]:
    """Run ``calls`` concurrently and return their results in the order given.

    Step identities were fixed when the calls were made, so the order stays stable across
    replays whatever order they finish in. On the first failure the others are cancelled and
    the error is raised, unless ``return_exceptions``.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"gather(limit={limit}): limit must be at least 1")
    semaphore = asyncio.Semaphore(limit) if limit is not None else None

    async def one(call: Awaitable[T]) -> T:
        if semaphore is None:
            return await call
        async with semaphore:
            return await call

    tasks = [asyncio.ensure_future(one(call)) for call in calls]
    if not tasks:
        return []
    if return_exceptions:
        return list(await asyncio.gather(*tasks, return_exceptions=True))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
