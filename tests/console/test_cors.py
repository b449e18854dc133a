"""A browser page on another origin calls the API: allowed origins get through (start a run with
a bearer key, stream its events with Last-Event-ID, read X-Outlast-Run-Id), others are refused by
the browser itself. Real Chromium against real API processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.support import ApiServer
from tests.console.conftest import Stack

KEY = "cors-key"
OTHER_KEY = "cors-other-key"  # its own tenant: the refused page's listing is its alone

#: A page of the package's API with no Content-Security-Policy (the console's allows only itself).
PAGE = "/openapi.json"

CALL = """async ([api, key]) => {
  try {
    const started = await fetch(api + '/v1/workflows/story/runs?wait=20', {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key},
      body: JSON.stringify({input: {topic: 'cors', words: 3}}),
    });
    const run = await started.json();
    const events = await fetch(api + '/v1/runs/' + run.run_id + '/events?follow=false', {
      headers: {'Authorization': 'Bearer ' + key, 'Accept': 'application/x-ndjson', 'Last-Event-ID': '1'},
    });
    const lines = (await events.text()).trim().split('\\n').map((line) => JSON.parse(line));
    return {status: run.status, header: events.headers.get('X-Outlast-Run-Id'), run: run.run_id,
            first: lines[0].seq, last: lines[lines.length - 1].type};
  } catch (error) {
    return {error: String(error)};
  }
}"""


@pytest.fixture(scope="module")
def apis(stack: Stack) -> Iterator[tuple[ApiServer, ApiServer]]:
    origin = stack.api.base_url  # the page's origin: the package's own API
    keys = {"OUTLAST_API_KEYS": f"{KEY}:tenant-cors"}
    allowed = ApiServer(stack.redis_url, factory_env={**keys, "OUTLAST_CORS_ORIGINS": f"{origin}/"})
    elsewhere = {
        "OUTLAST_API_KEYS": f"{OTHER_KEY}:tenant-other",
        "OUTLAST_CORS_ORIGINS": "https://elsewhere.example",
    }
    other = ApiServer(stack.redis_url, factory_env=elsewhere)
    try:
        allowed.proc.wait_ready()
        other.proc.wait_ready()
        yield allowed, other
    finally:
        allowed.stop()
        other.stop()


def test_a_page_on_an_allowed_origin_starts_and_streams_runs(
    page: Any, apis: tuple[ApiServer, ApiServer]
) -> None:
    allowed, _ = apis
    page.goto(PAGE)
    got = page.evaluate(CALL, [allowed.base_url, KEY])
    assert "error" not in got, got
    assert got["status"] == "completed"
    assert got["header"] == got["run"]  # an exposed header the page may read
    assert got["first"] == 2  # Last-Event-ID went through the preflight
    assert got["last"] == "run.completed"


def test_a_page_on_another_origin_is_refused_by_the_browser(
    page: Any, apis: tuple[ApiServer, ApiServer]
) -> None:
    _, other = apis
    page.goto(PAGE)
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text))
    got = page.evaluate(CALL, [other.base_url, OTHER_KEY])
    assert any("blocked by CORS policy" in line for line in seen), seen
    assert got == {"error": "TypeError: Failed to fetch"}
    # What the browser saw: the preflight names no origin for this page, and no run was started.
    preflight = httpx.options(
        f"{other.base_url}/v1/workflows/story/runs",
        headers={"Origin": page.evaluate("location.origin"), "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    runs = httpx.get(f"{other.base_url}/v1/runs", headers={"Authorization": f"Bearer {OTHER_KEY}"}).json()
    assert runs.get("runs") == [], runs


def test_a_bad_origin_setting_is_one_line(stack: Stack) -> None:
    from tests.cli.support import cli, one_line_error

    result = cli("api", "--redis", stack.redis_url, "--port", "0", "--cors-origin", "app.example.com")
    line = one_line_error(result)
    assert line == (
        "error: CORS origin 'app.example.com': give scheme://host[:port] (like https://app.example.com) or *"
    )
    assert result.returncode == 2
