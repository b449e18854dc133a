"""The web console in real Chromium, against a real API, real workers and Valkey.

Every wait is on something the page shows (Playwright's auto-waiting locators), never a sleep.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync
from playwright.sync_api import expect

from tests.api.support import ApiServer

from .conftest import Stack, spawn_console_worker


def _api(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.api.base_url, timeout=30)


def _start(stack: Stack, workflow: str, payload: dict[str, Any], **extra: Any) -> str:
    with _api(stack) as http:
        reply = http.post(f"/v1/workflows/{workflow}/runs", json={"input": payload, **extra})
        assert reply.status_code == 202, reply.text
        return str(reply.json()["run_id"])


def _run(stack: Stack, run_id: str) -> dict[str, Any]:
    with _api(stack) as http:
        reply = http.get(f"/v1/runs/{run_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body


def _open_gate(stack: Stack, gate: str) -> None:
    with redis_sync.Redis.from_url(stack.redis_url) as client:
        client.rpush(gate, "go")


def test_start_from_the_form_stream_and_reload_mid_run(page: Any, stack: Stack, artifacts: Path) -> None:
    gate = f"gate-{uuid.uuid4().hex}"
    page.goto("/#/start/story")
    page.get_by_label("topic").fill("moon")
    page.get_by_label("words").fill("0")  # below the schema's minimum: the API's 422
    page.get_by_label("gate").fill(gate)
    page.get_by_role("button", name="Start run").click()
    words = page.get_by_label("words")
    expect(words).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".field", has=words).locator(".field-error")).to_contain_text(
        "less than the minimum of 1"
    )

    words.fill("8")
    page.get_by_label("tone").select_option(label="cheerful")
    page.get_by_label("loud").check()
    page.get_by_role("button", name="Add to tags").click()
    page.locator("fieldset.array input").first.fill("space")
    page.get_by_label("city").fill("Paris")  # a nested object's field
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"#/runs/"))
    run_id = page.url.rsplit("/", 1)[1]

    output = page.locator("#output")
    expect(output).to_contain_text("moon-3! :)")  # the first half streamed; the run holds at the gate
    expect(page.locator("#status-line")).to_have_text("writing about moon")
    expect(page.locator("#progress-label")).to_have_text("words: 4 / 8")
    expect(page.locator('[data-object="story"]')).to_contain_text('"space"')
    page.screenshot(path=str(artifacts / "run-live.png"), full_page=True)

    page.reload()  # mid-run: the page resumes from its saved cursor
    expect(output).to_contain_text("moon-3! :)")
    _open_gate(stack, gate)
    expect(page.locator("#main")).to_have_attribute("data-done", "true")
    expect(page.locator("#run-status")).to_have_text("completed")
    final = _run(stack, run_id)["result"]
    assert final.startswith("moon-0! :) ")
    assert final.count("moon-") == 8
    assert output.text_content() == final  # exactly: nothing duplicated or lost across the reload
    expect(page.locator('[data-object="address"]')).to_contain_text('"city": "Paris"')
    picker = page.get_by_label("Show output of")
    picker.focus()  # its options are built when it is about to open
    picker.select_option("say#1")
    expect(output).to_have_text("moon-1! :) ")  # one step's output
    picker.select_option("")
    expect(output).to_have_text(final)
    input_shown = _run(stack, run_id)["input"]
    assert input_shown["tone"] == "cheerful"
    assert input_shown["loud"] is True
    assert input_shown["tags"] == ["space"]

    # The trace: one row per step, a detail panel with its inputs and output.
    expect(page.locator(".wf-row").first).to_be_visible()
    page.locator(".wf-row", has_text="say").first.click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text('"text": "moon-0! :)"')
    expect(detail).to_contain_text("Streamed output")


def test_raw_json_mode_round_trips_and_shows_422s(page: Any, stack: Stack) -> None:
    page.goto("/#/start/story")
    page.get_by_label("topic").fill("raw")
    page.get_by_label("Edit as raw JSON").check()
    raw = page.get_by_label("Value as JSON")
    expect(raw).to_have_value(re.compile(r'"topic": "raw"'))
    raw.fill('{"topic": 5}')
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".raw .field-error")).to_contain_text("topic: 5 is not of type 'string'")
    raw.fill('{"topic": "raw", "words": 2}')
    page.get_by_label("Edit as raw JSON").uncheck()  # back to the form, with the JSON's values
    expect(page.get_by_label("words")).to_have_value("2")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#main")).to_have_attribute("data-done", "true")
    expect(page.locator("#output")).to_have_text("raw-0 raw-1 ")


def test_worker_killed_mid_run_shows_both_attempts(page: Any, stack: Stack) -> None:
    gate = f"gate-{uuid.uuid4().hex}"
    first = spawn_console_worker(stack.redis_url, "kill", stack.llm_url)
    second: Any = None
    try:
        first.wait_ready()
        run_id = _start(stack, "story", {"topic": "sun", "words": 6, "gate": gate}, version="kill")
        page.goto(f"/#/runs/{run_id}")
        output = page.locator("#output")
        expect(output).to_contain_text("sun-2")
        expect(page.locator("#attempts tr")).to_have_count(1)
        first.stop(signal.SIGKILL)
        second = spawn_console_worker(stack.redis_url, "kill", stack.llm_url)
        second.wait_ready()
        # The takeover: attempt 2 on the new worker; attempt 1 lost with its worker.
        expect(page.locator("#attempts tr")).to_have_count(2, timeout=30_000)
        _open_gate(stack, gate)
        expect(page.locator("#main")).to_have_attribute("data-done", "true", timeout=30_000)
        rows = page.locator("#attempts tr")
        expect(rows.nth(0)).to_contain_text("lost")
        expect(rows.nth(0)).to_contain_text("another worker took the run over")
        expect(rows.nth(1)).to_contain_text("completed")
        workers = [rows.nth(i).locator("td").nth(1).text_content() for i in range(2)]
        assert workers[0] != workers[1]
        assert all(workers)
        assert output.text_content() == _run(stack, run_id)["result"]
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()


def test_input_requests_are_answered_from_their_forms(page: Any, stack: Stack) -> None:
    run_id = _start(stack, "approve", {"item": "release 7"})
    page.goto(f"/#/runs/{run_id}")
    form = page.locator('form[data-key="approval"]')
    expect(form).to_contain_text("Approve release 7?")
    form.get_by_label("approved").check()
    form.get_by_label("note").fill("ship it")
    form.get_by_role("button", name="Send").click()
    code = page.locator('form[data-key="code"]')
    expect(code).to_contain_text("The release code")
    secret = code.locator("input")
    expect(secret).to_have_attribute("type", "password")  # a secret input is a password field
    secret.fill("hunter22")
    code.get_by_role("button", name="Send").click()
    expect(page.locator("#main")).to_have_attribute("data-done", "true")
    assert _run(stack, run_id)["result"] == {"approved": True, "note": "ship it", "code_length": 8}
    expect(page.locator("#run-result")).to_contain_text('"code_length": 8')


def test_cancel_a_run_from_its_page(page: Any, stack: Stack) -> None:
    run_id = _start(stack, "hold", {"gate": f"gate-{uuid.uuid4().hex}"})
    page.goto(f"/#/runs/{run_id}")
    expect(page.locator("#output")).to_contain_text("started and holding")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_be_disabled()
    assert _run(stack, run_id)["status"] == "cancelled"


def test_runs_list_filters_and_live_updates(page: Any, stack: Stack, artifacts: Path) -> None:
    gate = f"gate-{uuid.uuid4().hex}"
    held = _start(stack, "hold", {"gate": gate})
    done = _start(stack, "story", {"topic": "list", "words": 2})
    page.goto("/#/runs")
    expect(page.locator(f'a[href="#/runs/{held}"]')).to_be_visible()
    expect(page.locator("tr", has=page.locator(f'a[href="#/runs/{done}"]'))).to_contain_text("completed")
    page.screenshot(path=str(artifacts / "runs-list.png"), full_page=True)

    page.get_by_label("Workflow").select_option("hold")
    expect(page.locator(f'a[href="#/runs/{done}"]')).to_have_count(0)
    rows = page.locator("table.runs tbody tr")
    expect(rows.first).to_contain_text("hold")
    for i in range(rows.count()):
        expect(rows.nth(i).locator("td").nth(1)).to_contain_text("hold")
    held_row = page.locator("tr", has=page.locator(f'a[href="#/runs/{held}"]'))
    expect(held_row).to_contain_text("running")
    _open_gate(stack, gate)
    expect(held_row).to_contain_text("completed")  # live: no reload
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator(f'a[href="#/runs/{held}"]')).to_have_count(0)
    assert "workflow=hold" in page.url
    assert "status=cancelled" in page.url


def test_workers_and_deploys_page(page: Any, stack: Stack) -> None:
    page.goto("/#/workers")
    expect(page.locator("#workers tr").first).to_contain_text("console")
    expect(page.locator("#active-version")).to_contain_text("console")
    versions = page.locator("#versions tr")
    expect(versions.first).to_be_visible()
    other = page.get_by_role("button", name=re.compile(r"^Promote "))
    if other.count():  # another version is known (the kill test's): promote it and roll back
        name = (other.first.get_attribute("aria-label") or "").removeprefix("Promote ")
        other.first.click()
        expect(page.locator("#active-version")).to_contain_text(name)
        page.get_by_role("button", name="Roll back").click()
        expect(page.locator("#active-version")).to_contain_text("console")


def test_a_draining_worker_is_shown_draining(page: Any, stack: Stack) -> None:
    gate = f"gate-{uuid.uuid4().hex}"
    worker = spawn_console_worker(stack.redis_url, "drain", stack.llm_url, "--drain-timeout", "30")
    try:
        worker.wait_ready()
        run_id = _start(stack, "hold", {"gate": gate}, version="drain")
        page.goto(f"/#/runs/{run_id}")
        expect(page.locator("#output")).to_contain_text("started and holding")
        worker.popen.send_signal(signal.SIGTERM)  # drains: finishes its run, takes no new one
        page.goto("/#/workers")
        row = page.locator("#workers tr", has=page.locator("td", has_text=re.compile(r"^drain$")))
        expect(row.locator(".badge")).to_have_text("draining")
        expect(row).to_contain_text("1 / 20")
        version = page.locator("#versions tr", has=page.locator("td", has_text=re.compile(r"^drain$")))
        expect(version).to_have_count(1)
        _open_gate(stack, gate)
        expect(row).to_have_count(0)  # it finished the run and left
        assert _run(stack, run_id)["status"] == "completed"
    finally:
        worker.stop()


def test_a_10k_event_run_renders_and_the_figure_is_printed(page: Any, stack: Stack, artifacts: Path) -> None:
    with _api(stack) as http:
        reply = http.post("/v1/workflows/big/runs?wait=120", json={"input": {"steps": 2000}}, timeout=150)
    assert reply.status_code == 200, reply.text
    run = reply.json()
    assert run["status"] == "completed"
    assert run["last_seq"] >= 10_000, run["last_seq"]
    started = time.perf_counter()
    page.goto(f"/#/runs/{run['run_id']}")
    main = page.locator("#main")
    expect(main).to_have_attribute("data-rendered", re.compile(r"^\d+$"), timeout=30_000)
    wall = time.perf_counter() - started
    rendered_ms = int(main.get_attribute("data-rendered") or 0)
    expect(page.locator("#waterfall")).to_contain_text("2000 spans")
    rows = page.locator(".wf-row").count()
    assert rows < 100, f"{rows} rows in the DOM: the waterfall must be virtualised"
    text = page.locator("#output").text_content() or ""
    assert text.startswith("s0 a b s1 a b ")
    assert text.endswith("s1999 a b ")
    print(
        f"\nconsole: run of {run['last_seq']} events / 2000 steps rendered in {rendered_ms} ms "
        f"(view mounted → final state + trace drawn; events streamed and reduced by "
        f"{main.get_attribute('data-streamed')} ms, trace by {main.get_attribute('data-traced')} ms); "
        f"page load to rendered {wall * 1000:.0f} ms"
    )
    (artifacts / "render-figure.txt").write_text(f"{run['last_seq']} events, 2000 spans: {rendered_ms} ms\n")


def test_trace_shows_nesting_retries_fallbacks_waits_and_children(
    page: Any, stack: Stack, artifacts: Path
) -> None:
    run_id = _start(stack, "tour", {"topic": "tour", "counter": f"counter-{uuid.uuid4().hex}"})
    page.goto(f"/#/runs/{run_id}")
    expect(page.locator("#main")).to_have_attribute("data-rendered", re.compile(r"^\d+$"), timeout=30_000)
    rows = page.locator(".wf-row")
    expect(rows.filter(has_text="outer")).to_have_count(1)
    inner = rows.filter(has_text="inner")
    indent = inner.locator(".wf-name").evaluate("el => parseFloat(el.style.paddingLeft)")
    assert indent > 4  # nested under outer
    expect(rows.filter(has_text="flaky").locator(".mark.retry")).to_have_text("↻1")
    expect(rows.filter(has_text="broken").locator(".mark.fallback")).to_have_text("fallback")
    expect(rows.filter(has_text="sleep").locator(".wf-bar.k-sleep")).to_have_count(1)
    expect(rows.filter(has_text="child:story").locator(".wf-bar.k-child")).to_have_count(1)
    rows.filter(has_text="broken").click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text("always broken")  # the error the fallback answered
    expect(detail).to_contain_text("the result is the fallback's")
    page.locator(".wf-viewport").focus()
    page.keyboard.press("Home")
    page.keyboard.press("Enter")
    expect(page.locator("#detail-title")).to_have_text("outer")  # the keyboard reaches every row
    page.locator("section", has=page.locator("#tr-title")).screenshot(path=str(artifacts / "trace.png"))
    rows.filter(has_text="child:story").click()
    page.locator("#detail a").click()  # the child run's own page
    expect(page.locator("#run-workflow")).to_have_text("story")
    expect(page.locator("#output")).to_have_text("tour-0 tour-1 ")


def test_llm_tokens_and_cost_in_the_list_and_the_trace(page: Any, stack: Stack) -> None:
    run_id = _start(stack, "ask", {"question": "What outlasts a crash?"})
    page.goto(f"/#/runs/{run_id}")
    expect(page.locator("#main")).to_have_attribute("data-done", "true")
    run = _run(stack, run_id)
    assert run["status"] == "completed", run["error"]
    assert page.locator("#output").text_content() == run["result"]  # the streamed tokens, once each
    assert run["tokens"] > 0
    assert run["cost"] > 0
    expect(page.locator("#usage")).to_contain_text("tokens in")
    page.locator(".wf-row").first.click()
    expect(page.locator("#detail")).to_contain_text("Tokens")
    page.goto("/#/runs?workflow=ask")
    row = page.locator("tr", has=page.locator(f'a[href="#/runs/{run_id}"]'))
    expect(row.locator("td").nth(6)).to_have_text(str(run["tokens"]))
    expect(row.locator("td").nth(7)).to_contain_text("$")


def test_keyed_mode_asks_for_a_key_and_streams_with_it(page: Any, stack: Stack) -> None:
    keys = {"OUTLAST_API_KEYS": "console-key:acme,other-key:globex", "OUTLAST_ADMIN_TENANTS": "globex"}
    api = ApiServer(stack.redis_url, factory_env=keys)
    try:
        api.proc.wait_ready()
        page.goto(f"{api.base_url}/#/start/story")
        key = page.get_by_label("Key", exact=True)
        key.fill("wrong-key")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        key.fill("console-key")
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("topic").fill("keyed")
        page.get_by_label("words").fill("3")
        page.get_by_role("button", name="Start run").click()
        expect(page).to_have_url(re.compile(r"#/runs/"))
        expect(page.locator("#main")).to_have_attribute("data-done", "true")
        expect(page.locator("#output")).to_have_text("keyed-0 keyed-1 keyed-2 ")  # EventSource with ?token=
        page.reload()  # the key stays in this tab's sessionStorage
        expect(page.locator("#output")).to_have_text("keyed-0 keyed-1 keyed-2 ")
        page.goto(f"{api.base_url}/#/workers")
        expect(page.locator("#active-version")).to_contain_text("console")
        expect(page.get_by_role("button", name="Roll back")).to_be_hidden()  # acme is no admin
        page.get_by_role("button", name="Forget key").click()
        expect(page.get_by_label("Key", exact=True)).to_be_visible()
    finally:
        api.stop()


#: Accessible names, no sideways scrolling, WCAG AA contrast of the theme colours (a11y.js).
_A11Y = (Path(__file__).parent / "a11y.js").read_text()


def test_accessible_narrow_and_themed(browser: Any, stack: Stack, artifacts: Path) -> None:
    run_id = _start(stack, "approve", {"item": "a11y"})  # waits: its page shows an input form
    for scheme in ("light", "dark"):
        context = browser.new_context(
            base_url=stack.api.base_url, viewport={"width": 390, "height": 800}, color_scheme=scheme
        )
        page = context.new_page()
        try:
            for where, ready in [
                ("/#/runs", "table.runs tbody tr"),
                ("/#/start/story", "#s-workflow"),
                (f"/#/runs/{run_id}", 'form[data-key="approval"]'),
                ("/#/workers", "#workers tr"),
            ]:
                page.goto(where)
                expect(page.locator(ready).first).to_be_visible()
                assert page.evaluate(_A11Y) == [], f"{scheme} {where}"
            page.goto(f"/#/runs/{run_id}")
            expect(page.locator('form[data-key="approval"]')).to_be_visible()
            page.screenshot(path=str(artifacts / f"run-narrow-{scheme}.png"), full_page=True)
        finally:
            context.close()
