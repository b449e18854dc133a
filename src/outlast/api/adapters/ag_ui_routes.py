"""The AG-UI endpoint of a chat workflow: ``POST /v1/workflows/{name}/ag-ui`` with a RunAgentInput."""

from __future__ import annotations

from typing import Any

from ag_ui.core import RunAgentInput
from fastapi import APIRouter, Request
from starlette.responses import Response

from outlast.api.adapters.ag_ui import AgUiTranslator
from outlast.api.adapters.messages import from_ag_ui_messages, require_chat_workflow
from outlast.api.adapters.stream import adapter_response, check_cursor, request_cursor, translated
from outlast.api.schemas import errors_doc
from outlast.api.state import StateDep, TenantDep
from outlast.api.workflows import launch, scoped_key, workflow_schema
from outlast.errors import RunNotFound

router = APIRouter()


@router.post(
    "/v1/workflows/{name}/ag-ui",
    summary="Run a chat workflow as an AG-UI agent (SSE of AG-UI events)",
    response_class=Response,
    responses={
        200: {
            "description": "AG-UI events (SSE).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors_doc(400, 401, 404, 413, 422, 503),
    },
)
async def ag_ui_run(
    name: str, body: RunAgentInput, request: Request, state: StateDep, tenant: TenantDep
) -> Response:
    """Starts a run with the messages as its ``messages`` input (and ``state``, ``context``,
    ``tools``, ``forwarded_props`` when the workflow's input declares them) and streams it.

    The same ``threadId`` + ``runId`` finds the same run again: to re-attach to a run in progress,
    POST the same input with ``?after=SEQ`` (or ``Last-Event-ID``), the ``id:`` of the last event
    you processed. The stream then opens with ``RUN_STARTED``, a ``STATE_SNAPSHOT`` and the starts
    of the steps and messages still open, and goes on from there. A cursor never starts a run:
    ids that started none answer 404.
    """
    version, schema = await workflow_schema(state, name, None)
    require_chat_workflow(name, schema)
    declared = schema.get("properties") or {}
    input: dict[str, Any] = {"messages": from_ag_ui_messages(body.messages)}
    extras = {
        "state": body.state,
        "context": [c.model_dump(mode="json") for c in body.context or []],
        "tools": [t.model_dump(mode="json") for t in body.tools or []],
        "forwarded_props": body.forwarded_props,
    }
    input.update({k: v for k, v in extras.items() if k in declared and v is not None})
    # A re-attaching client sends the messages it has by then: the run is found by its ids alone.
    key = f"ag-ui:{len(body.thread_id)}:{body.thread_id}:{body.run_id}"
    cursor = request_cursor(request)
    if cursor.seq:  # re-attach: only to the run these ids started, never a new one
        found = await state.dispatcher.started_for(name, scoped_key(tenant, key))
        if found is None:
            raise RunNotFound(
                f"no run of {name!r} to re-attach to for threadId {body.thread_id!r} and runId "
                f"{body.run_id!r}: POST without ?after= (and Last-Event-ID) to start one"
            )
        run_id = found
        await check_cursor(state, run_id, tenant, cursor)
    else:
        started, _ = await launch(state, tenant, name, input, version, key, schema, same_input=False)
        run_id = started.run_id
    translator = AgUiTranslator(run_id, body.thread_id, body.run_id)
    stream = translated(state, run_id, translator, cursor, "ag-ui", opening=translator.reattach)
    return adapter_response(state, stream, run_id)
