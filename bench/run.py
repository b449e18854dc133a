"""``make bench``: every Outlast benchmark, one after another, printing figures and ratios.

``make bench`` runs them all; ``python bench/run.py step worker`` picks some.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_latency import main as api_latency
from cluster_clients import main as cluster_clients
from commit_wait import main as commit_wait
from dev_start import main as dev_start
from fairness import main as fairness
from fan_out import main as fan_out
from llm_limits import main as llm_limits
from memory_sizing import main as memory_sizing
from mux_ab import main as mux_ab
from onboarding import main as onboarding
from step_overhead import main as step_overhead
from ui_latency import main as ui_latency
from worker_scaling import main as worker_scaling
from worker_throughput import main as worker_throughput

BENCHES: dict[str, Callable[[], Awaitable[None]]] = {
    "step": step_overhead,
    "worker": worker_throughput,
    "mux": mux_ab,
    "scaling": worker_scaling,
    "cluster_clients": cluster_clients,
    "commit": commit_wait,
    "api": api_latency,
    "fanout": fan_out,
    "llm": llm_limits,
    "ui": ui_latency,
    "dev": dev_start,
    "onboarding": onboarding,
    "memory": memory_sizing,
    "fairness": fairness,
}


async def run(names: list[str]) -> None:
    for name in names or list(BENCHES):
        if name not in BENCHES:
            raise SystemExit(f"unknown bench {name!r}; choose from {', '.join(BENCHES)}")
        await BENCHES[name]()


if __name__ == "__main__":
    # The same loop as the CLI's (uvloop when installed) for this script's clients of every system.
    from outlast.cli.main import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(run(sys.argv[1:]))
