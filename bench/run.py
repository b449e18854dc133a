"""``make bench``: every Outlast benchmark, one after another, printing figures and ratios."""

from __future__ import annotations

import asyncio

from step_overhead import main as step_overhead


def run() -> None:
    asyncio.run(step_overhead())


if __name__ == "__main__":
    run()
