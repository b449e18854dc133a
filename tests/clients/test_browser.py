"""Real Chromium (Debian's, driven by Playwright) runs a page that imports ``/client.js``.

The API process is SIGKILLed and restarted under the open page (Chromium's EventSource
reconnects), then the page is reloaded mid-run: it must render the text it had at once (from
sessionStorage), resume the stream after the seq it had rendered, and end showing exactly the
run's result.
Skips when Chromium is missing, except under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from .stack import TOKEN, Stack

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip

# A minimal page that uses the client the API serves; it is answered at the API's own origin.
PAGE = """<!doctype html><meta charset="utf-8"><title>run</title>
<p id="status">loading</p><pre id="out"></pre>
<script type="module">
import { createClient } from "/client.js";
const params = new URLSearchParams(location.search);
const client = createClient({ token: params.get("token") });
const show = (state) => {
  document.getElementById("out").textContent = state.output;
  document.getElementById("status").textContent = state.status;
};
window.firstSeq = null;
const stream = client.streamRun(params.get("run"), {
  onEvent: (event) => { window.firstSeq ??= event.seq; },
  onState: show,
});
window.resumedFrom = stream.cursor;
show(stream.state);
</script>
"""


def chromium() -> str:
    path = os.environ.get("OUTLAST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required under CI=true (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


def text(parts: int) -> str:
    return "".join(f"part {i}. " for i in range(parts))


async def page_text(page: Page) -> tuple[str, str]:
    return await page.text_content("#status") or "", await page.text_content("#out") or ""


@pytest.mark.timeout(90)
async def test_reload_mid_run_resumes_and_shows_the_final_output(browser: Browser, stack: Stack) -> None:
    gates = [f"gate:{uuid.uuid4().hex}" for _ in range(2)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        started = await http.post(
            "/v1/workflows/story/runs", json={"input": {"parts": 12, "gates": gates, "every": 4}}
        )
        run_id = started.json()["run_id"]
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        async def serve_page(route: Route) -> None:
            await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=PAGE)

        await page.route(f"{stack.base_url}/demo?*", serve_page)
        await page.goto(f"{stack.base_url}/demo?run={run_id}&token={TOKEN}")
        shows = "t => document.getElementById('out').textContent === t"
        await page.wait_for_function(shows, arg=text(4))  # held at the first gate

        # The API crashes; the run goes on; Chromium's EventSource reconnects to the new process.
        stack.api.kill()
        stack.open_gate(gates[0])
        stack.restart_api()
        await page.wait_for_function(shows, arg=text(8))  # held at the second gate
        held = (await http.get(f"/v1/runs/{run_id}")).json()
        assert held["status"] == "running"
        await page.wait_for_function("n => window.firstSeq === 1 && n > 0", arg=held["last_seq"])

        await page.reload()
        assert await page.evaluate("window.resumedFrom") == held["last_seq"]  # the seq it had rendered
        assert await page_text(page) == ("running", text(8))  # at once, from sessionStorage
        stack.open_gate(gates[1])
        await page.wait_for_function("document.getElementById('status').textContent === 'completed'")
        final = (await http.get(f"/v1/runs/{run_id}")).json()
        assert await page_text(page) == ("completed", final["result"])
        assert final["result"] == text(12)
        assert await page.evaluate("window.firstSeq") == held["last_seq"] + 1  # nothing replayed
        assert errors == []
