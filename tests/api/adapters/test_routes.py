"""The adapter endpoints over HTTP against a real API, worker and Valkey (tests/api/conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import redis.asyncio as aioredis
from ag_ui_validate.pytest_plugin import assert_valid_agui
from httpx_sse import aconnect_sse

from outlast.store import keys

from ..conftest import Servers
from .support import assemble, live_text


def user(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id or uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": text}]}


async def read_frames(
    http: httpx.AsyncClient, method: str, path: str, *, until: str | None = None, **kwargs: Any
) -> tuple[httpx.Response, list[tuple[str, str]]]:
    """(response, [(id, data)…]) of one SSE response; with ``until``, hang up after the first
    frame whose data contains it."""
    frames: list[tuple[str, str]] = []
    async with aconnect_sse(http, method, path, **kwargs) as source:
        response = source.response
        if response.status_code != 200:
            await response.aread()
            return response, frames
        async for sse in source.aiter_sse():
            if not sse.data:  # the opening retry hint
                continue
            frames.append((sse.id, sse.data))
            if until is not None and until in sse.data:
                break
    return response, frames


def parts_of(frames: list[tuple[str, str]]) -> list[dict[str, Any]]:
    import json

    assert frames[-1][1] == "[DONE]", frames[-3:]
    return [json.loads(data) for _, data in frames[:-1]]


async def result_of(http: httpx.AsyncClient, run_id: str) -> Any:
    detail = (await http.get(f"/v1/runs/{run_id}")).json()
    assert detail["status"] == "completed", detail
    return detail["result"]


async def test_chat_post_streams_the_reply_as_a_ui_message_and_is_idempotent(http: httpx.AsyncClient) -> None:
    body = {"id": uuid.uuid4().hex, "messages": [user("hello there")], "trigger": "submit-message"}
    response, frames = await read_frames(http, "POST", "/v1/chat/echo_chat", json=body)
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = parts_of(frames)
    run_id = parts[0]["messageId"]
    assert response.headers["x-outlast-run-id"] == run_id
    assert (
        live_text(assemble(parts))
        == await result_of(http, run_id)
        == "You said: hello there (1 messages so far) "
    )
    _again, frames2 = await read_frames(http, "POST", "/v1/chat/echo_chat", json=body)
    assert parts_of(frames2)[0]["messageId"] == run_id  # a retried POST: the same run, replayed
    regenerate = {**body, "trigger": "regenerate-message", "messageId": run_id}
    _, frames3 = await read_frames(http, "POST", "/v1/chat/echo_chat", json=regenerate)
    assert parts_of(frames3)[0]["messageId"] != run_id


async def test_chat_requests_that_cannot_start_a_chat_run_are_clear_4xx(http: httpx.AsyncClient) -> None:
    ok = {"id": "c", "messages": [user("hi")]}
    cases = [
        ("/v1/chat/noop3", ok, 422, "not_a_chat_workflow"),
        ("/v1/chat/no_such_workflow", ok, 404, "workflow_not_found"),
        ("/v1/chat/echo_chat", {"id": "c"}, 422, "validation_error"),
        ("/v1/chat/echo_chat", {"id": "c", "messages": [{"id": "x", "role": "robot", "parts": []}]}, 422,
         "validation_error"),
        ("/v1/chat/echo_chat", {"id": "c", "messages": [{"id": "x", "role": "user", "parts": []}]}, 422,
         "invalid_input"),
        ("/v1/chat/echo_chat", {**ok, "pause": "soon"}, 422, "invalid_input"),
    ]  # fmt: skip
    for path, body, status, code in cases:
        response = await http.post(path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert response.json()["error"]["code"] == code, response.text


async def test_chat_resume_replays_the_answer_in_progress_from_its_start(
    http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    chat_id, gate = uuid.uuid4().hex, f"gate:{uuid.uuid4().hex}"
    assert (await http.get(f"/v1/chat/echo_chat/{chat_id}/stream")).status_code == 204
    body = {"id": chat_id, "messages": [user("resume me please")], "gate": gate, "pause": 3}
    # The first connection reads until the answer is mid-text (held at the gate), then goes away.
    _, first = await read_frames(http, "POST", "/v1/chat/echo_chat", json=body, until='"text-delta"')
    assert first[0][1].startswith('{"type":"start"')
    frames: list[tuple[str, str]] = []
    async with aconnect_sse(http, "GET", f"/v1/chat/echo_chat/{chat_id}/stream") as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                frames.append((sse.id, sse.data))
            if '"text-delta"' in sse.data and gate:
                await store_redis.rpush(gate, 1)  # the replay reached the answer so far: let it go on
                gate = ""
    parts = parts_of(frames)
    assert parts[0]["type"] == "start"  # a resumed message starts on its boundary
    run_id = parts[0]["messageId"]
    text = live_text(assemble(parts))
    assert text == await result_of(http, run_id) == "You said: resume me please (1 messages so far) "
    assert (await http.get(f"/v1/chat/echo_chat/{chat_id}/stream")).status_code == 204  # answered


async def test_chats_and_their_runs_belong_to_a_tenant(servers: Servers) -> None:
    chat_id = uuid.uuid4().hex
    body = {"id": chat_id, "messages": [user("mine")]}
    async with httpx.AsyncClient(base_url=servers.keyed.base_url, timeout=30) as http:
        assert (await http.post("/v1/chat/echo_chat", json=body)).status_code == 401
        a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
        _, frames = await read_frames(http, "POST", "/v1/chat/echo_chat", json=body, headers=a)
        run_id = parts_of(frames)[0]["messageId"]
        assert (await http.get(f"/v1/runs/{run_id}/ui-stream", headers=b)).status_code == 404
        assert (await http.get(f"/v1/chat/echo_chat/{chat_id}/stream", headers=b)).status_code == 204
        _, own = await read_frames(http, "GET", f"/v1/runs/{run_id}/ui-stream?token=key-a")
        assert parts_of(own)[0]["messageId"] == run_id


async def test_ui_stream_resumes_at_exactly_the_next_frame_from_any_frame_id(http: httpx.AsyncClient) -> None:
    started = await http.post(
        "/v1/workflows/greet/runs", params={"wait": 20}, json={"input": {"name": "x", "times": 2}}
    )
    run_id = started.json()["run_id"]
    _, full = await read_frames(http, "GET", f"/v1/runs/{run_id}/ui-stream")
    ids = [frame_id for frame_id, _ in full]
    assert any("." in i for i in ids[:-1]), "the test needs an event with several frames"
    for i, frame_id in enumerate(ids[:-1]):
        _, rest = await read_frames(
            http, "GET", f"/v1/runs/{run_id}/ui-stream", headers={"Last-Event-ID": frame_id}
        )
        assert rest == full[i + 1 :], frame_id
    for bad, status in [("x", 400), ("3.0", 400), ("99999", 400)]:
        response = await http.get(f"/v1/runs/{run_id}/ui-stream", params={"after": bad})
        assert response.status_code == status
        assert response.json()["error"]["code"] == "bad_cursor"


async def test_ag_ui_endpoint_streams_a_conformant_run_and_reattaches_from_a_cursor(
    http: httpx.AsyncClient,
) -> None:
    import json

    thread, agui_run = uuid.uuid4().hex, uuid.uuid4().hex
    message = {"id": "m1", "role": "user", "content": "hi agent"}
    body = {"threadId": thread, "runId": agui_run, "state": {}, "tools": [], "context": [],
            "forwardedProps": {}, "messages": [message]}  # fmt: skip
    response, frames = await read_frames(http, "POST", "/v1/workflows/echo_chat/ag-ui", json=body)
    assert response.status_code == 200
    events = [json.loads(data) for _, data in frames]
    assert_valid_agui(events, max_warnings=0)
    run_id = events[0]["metadata"]["outlast"]["run_id"]
    assert events[-1]["type"] == "RUN_FINISHED"
    assert events[-1]["result"] == await result_of(http, run_id)
    middle = frames[len(frames) // 2][0]
    _, again = await read_frames(http, "POST", f"/v1/workflows/echo_chat/ag-ui?after={middle}", json=body)
    reattached = [json.loads(data) for _, data in again]
    assert_valid_agui(reattached, max_warnings=0)
    assert reattached[0]["metadata"]["outlast"]["run_id"] == run_id  # the same run, found by its ids
    assert (await http.post("/v1/workflows/noop3/ag-ui", json=body)).status_code == 422


async def test_an_ag_ui_reattach_cut_in_its_opening_resumes_where_it_was(http: httpx.AsyncClient) -> None:
    # A re-attached stream opens with frames that restate the run so far (RUN_STARTED, the state,
    # the open steps and messages). A client cut off after the first of them resumes from its id:
    # it must get that same continuation again, never events it already had.
    import json

    message = {"id": "m1", "role": "user", "content": "hi"}
    body = {"threadId": uuid.uuid4().hex, "runId": uuid.uuid4().hex, "state": {}, "tools": [],
            "context": [], "forwardedProps": {}, "messages": [message]}  # fmt: skip
    path = "/v1/workflows/echo_chat/ag-ui"
    _, full = await read_frames(http, "POST", path, json=body)
    for cursor, _ in full[:-1]:
        _, reattached = await read_frames(http, "POST", f"{path}?after={cursor}", json=body)
        assert_valid_agui([json.loads(data) for _, data in reattached], max_warnings=0)
        first_id = reattached[0][0]
        _, again = await read_frames(http, "POST", f"{path}?after={first_id}", json=body)
        assert again == reattached, (cursor, first_id)


async def test_an_ag_ui_reattach_to_no_run_is_a_404_and_starts_nothing(
    http: httpx.AsyncClient, store_redis: aioredis.Redis
) -> None:
    # A cursor means "re-attach": with ids that name no run (a typo, or ids older than the
    # idempotency window) the client must hear so, and no run may start behind its back.
    before = await store_redis.zcard(keys.RUNS_INDEX)
    message = {"id": "m1", "role": "user", "content": "hi"}
    body = {"threadId": uuid.uuid4().hex, "runId": uuid.uuid4().hex, "state": {}, "tools": [],
            "context": [], "forwardedProps": {}, "messages": [message]}  # fmt: skip
    response = await http.post("/v1/workflows/echo_chat/ag-ui?after=3", json=body)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "run_not_found"
    assert body["threadId"] in error["message"]
    assert "without ?after=" in error["message"]
    assert await store_redis.zcard(keys.RUNS_INDEX) == before
