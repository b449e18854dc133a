"""``python -m examples.<name>``: everything an example needs, started and stopped in one process.

:func:`local_stack` serves the fixture site, starts two LLM simulators (unless real provider keys
are set, see :mod:`examples.common.providers`), connects to ``OUTLAST_REDIS_URL`` or starts a
private Valkey in a temporary directory, and runs a worker in this process. The command then
starts a run through the :class:`~outlast.worker.Dispatcher`, like any app would, and renders its
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import outlast
from examples.common.local_model import MODEL_ALIAS, LocalModel
from examples.common.providers import SIM_ENV, uses_real_provider
from examples.common.sitehost import Page, SiteHost
from outlast.control import Dispatcher
from outlast.errors import OutlastError
from outlast.llm.simulator import SimulatorServer
from outlast.store.client import RedisClient
from outlast.worker import Worker
from outlast.worker.jobs import redis_url_of

VERSION = "examples"


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an example's ``main()``: a mistake or a missing piece is one line and exit code 1."""
    try:
        asyncio.run(main())
    except OutlastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@dataclass
class Stack:
    redis: RedisClient
    dispatcher: Dispatcher
    site: SiteHost
    sims: list[SimulatorServer] = field(default_factory=list)

    @property
    def provider_label(self) -> str:
        if self.sims:
            return f"LLM simulators at {self.sims[0].url} (openai SDK) and {self.sims[1].url} (anthropic SDK)"
        if os.environ.get("OPENAI_MODEL") == MODEL_ALIAS:
            return f"SmolLM2-135M on llama-cpp-python at {os.environ.get('OPENAI_BASE_URL')}"
        return "real providers from OPENAI_API_KEY / ANTHROPIC_API_KEY"


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Any:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.asynccontextmanager
async def local_stack(
    workflows: Iterable[outlast.Workflow[Any, Any]],
    pages: Mapping[str, Page],
    *,
    sim_knobs: Mapping[str, Any] | None = None,
    rpm: int = 0,
    data_dir: str | None = None,
    concurrency: int = 50,
    local_model: bool = False,
) -> AsyncIterator[Stack]:
    """Site, simulators (or real providers, or the local model), store and an in-process worker;
    all stopped on exit."""
    with contextlib.ExitStack() as stack:
        site = stack.enter_context(SiteHost(pages))
        env = {"OUTLAST_EXAMPLE_RPM": str(rpm)} if rpm and "OUTLAST_EXAMPLE_RPM" not in os.environ else {}
        sims: list[SimulatorServer] = []
        if local_model:
            model = stack.enter_context(LocalModel())
            env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="local", OPENAI_MODEL=MODEL_ALIAS)
            stack.enter_context(_env({**env, SIM_ENV: ""}))  # the local model only
        elif not uses_real_provider():
            knobs = dict(sim_knobs or {})
            sims = [stack.enter_context(SimulatorServer(seed=seed, **knobs)) for seed in (1, 2)]
            env[SIM_ENV] = f"{sims[0].url},{sims[1].url}"
        data = data_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="outlast-example-"))
        async with outlast.connect(data_dir=data) as redis:
            # The LLM's limits are fleet-wide through this same server (see providers.py).
            with _env({**env, "OUTLAST_REDIS_URL": redis_url_of(redis)}):
                worker = Worker(list(workflows), redis, concurrency=concurrency, version=VERSION)
                running = asyncio.create_task(worker.run())
                ready = asyncio.create_task(worker.ready.wait())
                await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
                if not worker.ready.is_set():
                    ready.cancel()
                    await running  # raises what stopped it
                dispatcher = Dispatcher(redis)
                try:
                    yield Stack(redis, dispatcher, site, sims)
                finally:
                    worker.stop()
                    await running
                    await dispatcher.aclose()
