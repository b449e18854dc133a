"""Every error status, in the one error shape; and fuzzing finds no 5xx for client mistakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Servers
from .support import ApiServer


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"]["code"] == code
    return dict(body["error"])


async def test_400_bad_json_and_bad_cursors(http: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    error_of(
        await http.post("/v1/workflows/noop3/runs", content=b'{"input": ', headers=headers),
        400,
        "invalid_json",
    )
    error_of(await http.get("/v1/runs", params={"cursor": "%%%"}), 400, "bad_cursor")
    error_of(await http.get("/v1/runs", params={"cursor": "bm9jb2xvbg"}), 400, "bad_cursor")  # "nocolon"
    run = (await http.post("/v1/workflows/noop3/runs", params={"wait": 20}, json={})).json()
    events = f"/v1/runs/{run['run_id']}/events"
    error_of(await http.get(events, headers={"Last-Event-ID": "abc"}), 400, "bad_cursor")
    error_of(await http.get(events, params={"after": "-1"}), 400, "bad_cursor")
    past = error_of(await http.get(events, params={"after": str(run["last_seq"] + 1)}), 400, "bad_cursor")
    assert "past the end" in past["message"]
    assert past["details"] == {"cursor": run["last_seq"] + 1, "last_seq": run["last_seq"]}


async def test_401_missing_or_bad_key(servers: Servers) -> None:
    async with httpx.AsyncClient(base_url=servers.keyed.base_url) as http:
        missing = await http.get("/v1/runs")
        error_of(missing, 401, "missing_api_key")
        assert missing.headers["www-authenticate"] == "Bearer"
        for value in ("Bearer nope", "Basic a2V5LWE=", "Bearer key-a2", "Bearer"):
            error_of(await http.get("/v1/runs", headers={"Authorization": value}), 401, "invalid_api_key")
        error_of(await http.get("/v1/runs/x/events", params={"token": "nope"}), 401, "invalid_api_key")
        error_of(await http.post("/v1/workflows/noop3/runs", json={}), 401)
        assert (await http.get("/healthz")).status_code == 200  # operations endpoints are not under /v1


async def test_404_unknown_workflow_version_run_and_route(http: httpx.AsyncClient) -> None:
    error_of(await http.post("/v1/workflows/nope/runs", json={}), 404, "workflow_not_found")
    error_of(await http.post("/v1/workflows/noop3/runs", json={"version": "v404"}), 404, "workflow_not_found")
    for method, path in [
        ("GET", "/v1/runs/nope"),
        ("GET", "/v1/runs/nope/events"),
        ("GET", "/v1/runs/nope/trace"),
        ("POST", "/v1/runs/nope/cancel"),
        ("GET", "/v1/runs/%7Bbraces%7D"),
    ]:
        error_of(await http.request(method, path), 404, "run_not_found")
    error_of(await http.get("/v2/nothing"), 404, "not_found")
    error_of(await http.delete("/v1/runs"), 405, "method_not_allowed")


async def test_409_idempotency_conflict_and_cancel_after_the_end(http: httpx.AsyncClient) -> None:
    body = {"input": {"x": 1}, "idempotency_key": "order-17"}
    first = await http.post("/v1/workflows/noop3/runs", params={"wait": 20}, json=body)
    again = await http.post("/v1/workflows/noop3/runs", json=body)
    assert (again.status_code, again.json()["run_id"], again.json()["created"]) == (
        202,
        first.json()["run_id"],
        False,
    )
    assert again.json()["status"] == "completed"
    conflict = {"input": {"x": 2}, "idempotency_key": "order-17"}
    error_of(await http.post("/v1/workflows/noop3/runs", json=conflict), 409, "idempotency_conflict")
    done = error_of(await http.post(f"/v1/runs/{first.json()['run_id']}/cancel"), 409, "run_finished")
    assert done["details"] == {"status": "completed"}


async def test_413_by_content_length_and_by_bytes_read(http: httpx.AsyncClient) -> None:
    big = b'{"input": {"name": "' + b"x" * (1 << 20) + b'"}}'
    headers = {"Content-Type": "application/json"}
    error_of(
        await http.post("/v1/workflows/greet/runs", content=big, headers=headers), 413, "payload_too_large"
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts bytes read
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    response = await http.post("/v1/workflows/greet/runs", content=chunked(), headers=headers)
    error_of(response, 413, "payload_too_large")


async def test_422_names_the_field_and_why(http: httpx.AsyncClient) -> None:
    bad = {"input": {"times": "two", "extra": 1}}
    error = error_of(await http.post("/v1/workflows/greet/runs", json=bad), 422, "invalid_input")
    locs = {tuple(d["loc"]): d for d in error["details"]}
    assert locs[("input", "name")]["type"] == "required"
    assert "'two' is not of type 'integer'" in locs[("input", "times")]["msg"]
    assert "'extra' was unexpected" in locs[("input",)]["msg"]
    assert "input.name" in error["message"]
    # FastAPI's own validation errors come in the same shape.
    error_of(await http.get("/v1/runs", params={"limit": 0}), 422, "validation_error")
    error_of(await http.get("/v1/runs", params={"status": "sleeping"}), 422, "validation_error")
    error_of(await http.get("/v1/runs/nope/events", params={"follow": "maybe"}), 422, "validation_error")
    error_of(
        await http.post("/v1/workflows/noop3/runs", params={"wait": -1}, json={}), 422, "validation_error"
    )
    for body in ({"input": [1]}, {"surprise": 1}, {"version": "@any"}):
        error_of(await http.post("/v1/workflows/noop3/runs", json=body), 422, "validation_error")


async def test_503_when_redis_is_unreachable(servers: Servers) -> None:
    async with httpx.AsyncClient(base_url=servers.dead.base_url, timeout=30) as http:
        error_of(await http.get("/healthz"), 503, "store_unavailable")
        error_of(await http.get("/v1/runs/x"), 503, "store_unavailable")


# -- fuzzing ----------------------------------------------------------------------------------


def _fuzz(api: ApiServer, headers: dict[str, str] | None = None) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    strategy = st.one_of(*(op.ok().as_strategy() for op in schema.get_all_operations()))

    with requests.Session() as session:

        @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            response = case.call(base_url=api.base_url, session=session, headers=headers, timeout=10)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"

        check()


def test_fuzzing_the_openapi_finds_no_5xx(api: ApiServer) -> None:
    _fuzz(api)


@pytest.mark.timeout(90)
def test_fuzzing_with_a_key_finds_no_5xx(servers: Servers) -> None:
    _fuzz(servers.keyed, {"Authorization": "Bearer key-a"})
