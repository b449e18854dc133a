"""Starting runs: what a malformed start body answers, and that it leaves nothing behind."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from outlast.store import keys

from .test_errors import error_of

START = "/v1/workflows/greet/runs"


async def _queued(redis: aioredis.Redis) -> tuple[int, int]:
    """What a start writes: the dev lane's work stream length and the run index's size."""
    return await redis.xlen(keys.work_stream("dev")), await redis.zcard(keys.RUNS_INDEX)


async def test_a_body_without_the_input_wrapper_says_where_the_input_goes(http: httpx.AsyncClient) -> None:
    error = error_of(await http.post(START, json={"name": "x", "times": 2}), 422, "validation_error")
    assert "unknown field(s) 'name', 'times'" in error["message"]
    assert 'the workflow\'s input goes under "input": {"input": {...}}' in error["message"]
    assert error["details"][0]["loc"] == ["body"]
    assert error["details"][0]["type"] == "input_not_wrapped"
    # With "input" there, the hint names the fields a start body has.
    error = error_of(await http.post(START, json={"input": {"name": "x"}, "surprise": 1}), 422)
    assert "unknown field(s) 'surprise'" in error["message"]
    assert '"input", "idempotency_key", "version", "fairness_key" and "max_concurrency"' in error["message"]


async def test_content_type_missing_is_json_and_a_non_json_one_is_415(http: httpx.AsyncClient) -> None:
    body = b'{"input": {"name": "ct"}}'
    request = http.build_request("POST", START, content=body)
    assert "content-type" not in request.headers
    assert (await http.send(request)).status_code == 202
    # curl -d sends application/x-www-form-urlencoded: say what to send instead.
    for media in ("application/x-www-form-urlencoded", "text/plain"):
        response = await http.post(START, content=body, headers={"Content-Type": media})
        error = error_of(response, 415, "unsupported_media_type")
        assert "Content-Type: application/json" in error["message"]
        assert media in error["message"]
    vendor = {"Content-Type": "application/vnd.api+json; charset=utf-8"}
    assert (await http.post(START, content=body, headers=vendor)).status_code == 202


async def test_a_lone_surrogate_is_a_422_naming_the_field_and_queues_nothing(
    http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    headers = {"Content-Type": "application/json"}
    before = await _queued(store_redis)
    cases = [
        (b'{"input": {"name": "\\ud800"}}', ["input", "name"]),
        (b'{"input": {"name": "ok", "token": "a\\udfffb"}}', ["input", "token"]),
    ]
    for body, loc in cases:
        error = error_of(await http.post(START, content=body, headers=headers), 422, "invalid_input")
        assert error["details"][0]["loc"] == loc
        assert f"{'.'.join(loc)}: not valid Unicode text" in error["message"]
    body = b'{"input": {"name": "x"}, "idempotency_key": "k\\ud800"}'  # pydantic refuses it itself
    error = error_of(await http.post(START, content=body, headers=headers), 422, "validation_error")
    assert error["details"][0]["loc"] == ["body", "idempotency_key"]
    # A key that is not valid Unicode is named escaped (the error itself must encode).
    body = b'{"input": {"name": "x", "\\ud800": 1}}'
    error = error_of(await http.post("/v1/workflows/noop3/runs", content=body, headers=headers), 422)
    assert error["details"][0]["loc"] in (["input", "\\ud800"], ["input"])
    assert await _queued(store_redis) == before, "a refused start wrote something"
