"""``/v1/runs``: list, inspect, cancel and trace runs, and supply input to them (tenant-scoped)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse

from outlast.api.errors import ApiError
from outlast.api.schemas import (
    CancelResult,
    InputAccepted,
    PendingWait,
    RunDetail,
    RunPage,
    RunSummary,
    Trace,
    Usage,
    errors_doc,
)
from outlast.api.state import ApiState, StateDep, TenantDep, run_urls
from outlast.core.trace import load_history
from outlast.core.waiting import INPUT_KEY_PATTERN
from outlast.events import TERMINAL_STATUSES, RunStatus
from outlast.store.base import RunRecord

router = APIRouter()

#: Index entries one listing request looks at before it returns a (possibly short) page.
SCAN_LIMIT = 5_000
_SUMMARY_FIELDS = (
    "run_id", "workflow", "version", "status", "attempt", "created_at", "updated_at", "finished_at",
    "last_seq", "tenant", "tokens", "cost",
)  # fmt: skip


def pending_wait(record: dict[str, Any]) -> PendingWait | None:
    """A wait record of the run's ``waits`` hash as the API shows it (None for an unknown kind)."""
    kind = record.get("kind")
    if kind not in ("input", "sleep", "child"):
        return None
    deadline = record.get("deadline")
    return PendingWait(
        kind=kind,
        step=record.get("step_id"),
        key=record.get("key"),
        json_schema=record.get("schema"),
        prompt=record.get("prompt") or None,
        secret=bool(record.get("secret")),
        deadline=int(deadline) / 1000 if deadline else None,  # stored in server milliseconds
        child_run_id=record.get("child") or None,
    )


async def run_detail(state: ApiState, record: RunRecord, objects: dict[str, Any]) -> RunDetail:
    waiting_for: list[PendingWait] = []
    if record.status not in TERMINAL_STATUSES:  # an ended run waits for nothing: no read
        found = (pending_wait(w) for w in await state.dispatcher.pending_waits(record.run_id))
        waiting_for = [w for w in found if w is not None]
    return RunDetail(
        run_id=record.run_id,
        workflow=record.workflow,
        version=record.version,
        status=record.status,
        attempt=record.attempt,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
        started_at=record.started_at,
        last_seq=record.last_seq,
        tokens=int(record.tokens),
        cost=record.cost,
        input=await state.masked_input(record),
        result=record.result,
        error=record.error,
        progress=record.progress,
        status_message=record.status_message,
        cancel_requested=record.cancel_requested,
        waiting_for=waiting_for,
        objects=objects,
        **run_urls(record.run_id),
    )


def _encode_cursor(score: int, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{member}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, _, member = text.partition(":")
        if not member:
            raise ValueError(cursor)
        return int(score), member
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "cursor is not one this API returned") from None


@router.get("/v1/runs", response_model=RunPage, responses=errors_doc(400, 401, 422, 503))
async def list_runs(
    state: StateDep,
    tenant: TenantDep,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400, description="The last page's next_cursor.")] = None,
) -> RunPage:
    """Runs newest first, filtered by workflow and status; cursor pagination.

    A page may be short (with a next_cursor) when filters skip many runs: keep following the cursor.
    With API keys, a tenant's listing reads only its own run index.
    """
    reader = state.dispatcher.reader
    pos = _decode_cursor(cursor) if cursor else None
    found: list[RunSummary] = []
    expired: list[tuple[str, int]] = []
    scanned = 0
    exhausted = False
    while len(found) < limit and scanned < SCAN_LIMIT:
        batch = await reader.index_page(pos, min(500, max(2 * limit, 100)), tenant)
        if not batch:
            exhausted = True
            break
        rows = await reader.fields([run_id for run_id, _ in batch], _SUMMARY_FIELDS)
        for (run_id, score), values in zip(batch, rows, strict=True):
            scanned += 1
            pos = (score, run_id)
            if values is None:
                expired.append((run_id, score))
                continue
            owner = values.pop("tenant", None)
            if tenant is not None and owner != tenant:
                continue
            if workflow and values.get("workflow") != workflow:
                continue
            if run_status and values.get("status") != run_status:
                continue
            found.append(RunSummary.model_validate(values))
            if len(found) >= limit:
                break
    # The indexes outlive expired runs: prune them (their keys are gone for good; entries younger
    # than a minute are kept, a start may be recording them).
    await reader.forget(expired, tenant)
    more = not exhausted and pos is not None
    return RunPage(runs=found, next_cursor=_encode_cursor(*pos) if more and pos is not None else None)


@router.get("/v1/runs/{run_id}", response_model=RunDetail, responses=errors_doc(401, 404, 503))
async def get_run(run_id: str, state: StateDep, tenant: TenantDep) -> RunDetail:
    """Status, input (masked), result or error, timestamps, last_seq, objects and latest progress.

    Render this snapshot, then stream ``/events?after=<last_seq>``: objects match last_seq exactly.
    """
    record, objects = await state.run_snapshot(run_id, tenant)
    return await run_detail(state, record, objects)


@router.post(
    "/v1/runs/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelResult,
    responses=errors_doc(401, 404, 409, 503),
)
async def cancel_run(run_id: str, state: StateDep, tenant: TenantDep) -> JSONResponse:
    """Cancel a run: a queued one ends now (``cancelled``), a running one within a heartbeat
    (``cancelling``). 409 if it already ended."""
    await state.get_run(run_id, tenant)
    result = await state.dispatcher.cancel(run_id)
    if result.already:
        raise ApiError(
            409,
            "run_finished",
            f"run {run_id} already ended ({result.status}); nothing to cancel",
            {"status": result.status},
        )
    body = CancelResult(run_id=run_id, status="cancelled" if result.status == "cancelled" else "cancelling")
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


_JSON_BODY = {
    "required": True,
    "description": "The input value itself, as any JSON value (checked against the wait's schema).",
    "content": {"application/json": {"schema": {}, "example": {"ok": True}}},
}
#: Deepest nesting of arrays and objects an input value may have (values are stored as JSON,
#: and the encoder refuses much deeper ones).
MAX_INPUT_DEPTH = 100


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (``[]`` is one, ``[[1]]`` two)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            item
            for node in level
            if isinstance(node, dict | list)
            for item in (node.values() if isinstance(node, dict) else node)
        ]
    return any(isinstance(node, dict | list) for node in level)


async def require_json(request: Request) -> None:
    """415 for a body declared as something other than JSON; no Content-Type is read as JSON."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json, not {media!r}",
        )


async def input_value(request: Request) -> Any:
    """The request body as one JSON value: 415 for a non-JSON Content-Type, 400 when empty or bad."""
    await require_json(request)
    raw = await request.body()
    if not raw.strip():
        raise ApiError(
            400, "invalid_json", 'the request body is empty: send the input value as JSON, e.g. {"ok": true}'
        )
    too_deep = ApiError(
        400, "invalid_json", f"the input value is nested deeper than {MAX_INPUT_DEPTH} levels"
    )
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise ApiError(
            400, "invalid_json", f"the request body is not valid JSON ({exc}); send the input value as JSON"
        ) from None
    if _nested_deeper_than(value, MAX_INPUT_DEPTH):
        raise too_deep
    return value


@router.post(
    "/v1/runs/{run_id}/inputs/{key}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InputAccepted,
    responses=errors_doc(400, 401, 404, 409, 413, 415, 422, 503),
    openapi_extra={"requestBody": _JSON_BODY},
)
async def supply_input(
    run_id: str,
    key: Annotated[str, Path(pattern=INPUT_KEY_PATTERN, description="The key the run waits for.")],
    request: Request,
    state: StateDep,
    tenant: TenantDep,
) -> JSONResponse:
    """Supply the value a run waits for under ``key`` (``wait_for_input``); the body is the value.

    202 once it is accepted: ``resumed`` (the run was suspended and is queued again) or
    ``delivered`` (its running attempt takes it). 422 if the value fails the wait's schema and 409
    if the run waits for no such key (in both cases the run is left as it was).
    """
    value = await input_value(request)
    await state.get_run(run_id, tenant)
    outcome = await state.dispatcher.supply_input(run_id, key, value)
    body = InputAccepted(run_id=run_id, key=key, status="resumed" if outcome == "resumed" else "delivered")
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


@router.get("/v1/runs/{run_id}/trace", response_model=Trace, responses=errors_doc(401, 404, 503))
async def run_trace(run_id: str, state: StateDep, tenant: TenantDep) -> Trace:
    """The run's span tree, attempts and LLM usage, rebuilt from its events.

    Secrets were masked when the events were written.
    """
    await state.get_run(run_id, tenant)
    spans, attempts = await load_history(state.dispatcher.store, run_id)
    usage = Usage()
    stack = list(spans)
    while stack:
        span = stack.pop()
        stack.extend(span.children)
        if span.usage:
            usage.tokens_in += int(span.usage.get("tokens_in") or 0)
            usage.tokens_out += int(span.usage.get("tokens_out") or 0)
            usage.cost += float(span.usage.get("cost") or 0.0)
    usage.cost = round(usage.cost, 8)
    return Trace(run_id=run_id, spans=spans, attempts=attempts, usage=usage)
