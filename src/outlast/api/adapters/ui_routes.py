"""The AI SDK endpoints: any run as a UI message stream, and the chat endpoints ``useChat`` calls.

``DefaultChatTransport({api: "<base>/v1/chat/<workflow>"})`` POSTs ``{id, messages, trigger,
messageId, …body}`` to the ``api`` and, with ``useChat({resume: true})``, GETs
``<api>/<chat id>/stream`` after a page load; both answer the UI message stream.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from outlast.api.adapters.messages import UIMessage, from_ui_messages, require_chat_workflow
from outlast.api.adapters.stream import Cursor, adapter_response, check_cursor, request_cursor, translated
from outlast.api.adapters.ui_message import DONE, HEADER, VERSION, UIMessageTranslator
from outlast.api.errors import ApiError
from outlast.api.schemas import errors_doc
from outlast.api.state import ApiState, StateDep, TenantDep
from outlast.api.workflows import launch, workflow_schema
from outlast.errors import RunNotFound
from outlast.events import TERMINAL_STATUSES
from outlast.store.chats import ChatIndex

router = APIRouter()

_UI_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run as an AI SDK UI message stream (SSE; x-vercel-ai-ui-message-stream: v1).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def ui_stream(state: ApiState, run_id: str, cursor: Cursor) -> Response:
    body = translated(state, run_id, UIMessageTranslator(run_id), cursor, "ui", closing=DONE)
    return adapter_response(state, body, run_id, {HEADER: VERSION})


@router.get(
    "/v1/runs/{run_id}/ui-stream",
    summary="Stream a run as an AI SDK UI message stream, resumable",
    response_class=Response,
    responses={**_UI_DOC, **errors_doc(400, 401, 404, 503)},
)
async def run_ui_stream(run_id: str, request: Request) -> Response:
    """One assistant message: ``start`` … ``finish``, then ``[DONE]``. Resume with ``?after=`` or
    ``Last-Event-ID`` (``SEQ`` or ``SEQ.PART``, the ``id:`` of the last frame received); the
    resumed stream continues the one that stopped (no second ``start``). ``?token=`` as for events.
    """
    state: ApiState = request.app.state.outlast
    tenant = state.auth.tenant_for(request.headers.get("authorization"), request.query_params.get("token"))
    cursor = request_cursor(request)
    await check_cursor(state, run_id, tenant, cursor)
    return ui_stream(state, run_id, cursor)


class ChatRequest(BaseModel):
    """What ``DefaultChatTransport`` sends. Other top-level fields (``useChat``'s ``body``) are
    passed to the workflow as input fields next to ``messages``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=256, description="The chat id.")
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, max_length=256)


def chat_idempotency_key(body: ChatRequest, input: dict[str, Any]) -> str:
    """The same request (a retried POST) finds the same run; an edited message, a new message or a
    regeneration (which names the answer it replaces) starts a new one."""
    what = [body.id, body.messages[-1].id, body.trigger, body.messageId or "", input]
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"chat:{digest[:40]}"


@router.post(
    "/v1/chat/{workflow}",
    summary="Answer a chat message with a run of a chat workflow (AI SDK useChat)",
    response_class=Response,
    responses={**_UI_DOC, **errors_doc(400, 401, 404, 409, 413, 422, 503)},
)
async def chat(workflow: str, body: ChatRequest, state: StateDep, tenant: TenantDep) -> Response:
    """Starts (idempotently) a run with the chat's messages as its ``messages`` input and streams
    its reply. The chat then points at this run for the resume endpoint."""
    version, schema = await workflow_schema(state, workflow, None)
    require_chat_workflow(workflow, schema)
    messages = from_ui_messages(body.messages)
    if not messages:
        raise ApiError(422, "invalid_input", "the chat has no text to answer: every message's text is empty")
    input = {**(body.model_extra or {}), "messages": messages}
    key = chat_idempotency_key(body, input)
    started, _ = await launch(state, tenant, workflow, input, version, key, schema)
    await ChatIndex(state.redis, state.settings.retention).record(workflow, tenant, body.id, started.run_id)
    return ui_stream(state, started.run_id, Cursor())


@router.get(
    "/v1/chat/{workflow}/{chat_id}/stream",
    summary="Resume the chat's answer in progress (AI SDK useChat resume)",
    response_class=Response,
    responses={**_UI_DOC, 204: {"description": "No answer in progress."}, **errors_doc(401, 503)},
)
async def chat_resume(workflow: str, chat_id: str, state: StateDep, tenant: TenantDep) -> Response:
    """The stream of the run answering the chat's latest message, from its ``start`` (a resumed
    message must begin on a message boundary), or 204 when that run has ended or there is none."""
    run_id = await ChatIndex(state.redis, state.settings.retention).current(workflow, tenant, chat_id)
    if run_id is None:
        return Response(status_code=204)
    try:
        record = await state.get_run(run_id, tenant)
    except RunNotFound:
        return Response(status_code=204)
    if record.status in TERMINAL_STATUSES:
        return Response(status_code=204)
    return ui_stream(state, run_id, Cursor())
