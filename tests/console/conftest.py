"""A worker, an API and headless Chromium for the console's browser tests.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python (never
``playwright install``). Locally the tests skip when it is missing; under ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from outlast.llm.simulator import SimulatorServer
from outlast.store.embedded import EmbeddedServer
from tests.api.support import CLI, ROOT, ApiServer, Proc, child_env

DB = 7
APP = str(Path(__file__).with_name("app.py"))
CHROMIUM = os.environ.get("OUTLAST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".outlast" / "artifacts" / "console"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip


def spawn_console_worker(redis_url: str, version: str, llm_url: str = "", *args: str) -> Proc:
    cmd = [
        sys.executable, "-c", CLI, "worker", APP, "--redis", redis_url, "--version", version,
        "--heartbeat", "0.2", "--lease-timeout", "1", "--concurrency", "20", *args,
    ]  # fmt: skip
    return Proc(cmd, child_env(redis_url, OUTLAST_CONSOLE_LLM=llm_url), b"worker ")


@dataclass
class Stack:
    redis_url: str
    api: ApiServer
    worker: Proc
    llm_url: str


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="package")
def stack(valkey_server: EmbeddedServer) -> Iterator[Stack]:
    url = valkey_server.url.rsplit("/", 1)[0] + f"/{DB}"
    with redis_sync.Redis.from_url(url) as client:
        client.flushdb()
    with SimulatorServer(seed=3) as sim:
        worker = spawn_console_worker(url, "console", sim.base_url)
        worker.wait_ready()  # first: its version becomes the active one
        api = ApiServer(url)
        try:
            api.proc.wait_ready()
            yield Stack(url, api, worker, sim.base_url)
        finally:
            api.stop()
            worker.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot skip under CI=true: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(base_url=stack.api.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
