"""``/v1/workflows``: the registry, and starting runs (validated here, enqueued by the Dispatcher)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

import jsonschema
from fastapi import APIRouter, Depends, Header, Query, status
from fastapi.responses import JSONResponse
from pydantic_core import PydanticSerializationError
from starlette.responses import Response

from outlast import serde
from outlast.api.errors import ApiError
from outlast.api.runs import require_json, run_detail
from outlast.api.schemas import RunDetail, StartedRun, StartRun, WorkflowInfo, WorkflowList, errors_doc
from outlast.api.state import ApiState, StateDep, TenantDep, run_urls
from outlast.api.streaming import STREAM_CONTENT, live_frames, stream_format, stream_response
from outlast.control import Started
from outlast.errors import WorkflowNotFound
from outlast.events import TERMINAL_STATUSES, RunStatus
from outlast.store.base import RunRecord

# A start body without Content-Type is read as JSON; require_json refuses any non-JSON type.
router = APIRouter(strict_content_type=False)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def validate_input(name: str, schema: dict[str, Any], value: dict[str, Any]) -> None:
    """422 naming each bad field and why (the registered JSON Schema decides)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise ApiError(422, "invalid_input", "input is nested too deeply") from None
    if not found:
        return
    errors: list[dict[str, Any]] = []
    for err in found[:20]:
        loc: list[Any] = ["input", *err.absolute_path]
        if err.validator == "required" and isinstance(err.instance, dict):
            missing = [p for p in err.validator_value if p not in err.instance]
            loc += missing[:1]
        errors.append({"loc": loc, "msg": err.message, "type": str(err.validator)})
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    raise ApiError(422, "invalid_input", f"invalid input for workflow {name!r}: {summary}", errors)


def _not_unicode(value: Any, loc: list[Any]) -> list[Any] | None:
    """Where the first string (or object key) of ``value`` that UTF-8 cannot encode is (a lone
    surrogate such as ``"\\ud800"``, which JSON allows), or None. Keys are shown escaped."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return loc
    elif isinstance(value, dict):
        for key, item in value.items():
            shown = key.encode("utf-8", "backslashreplace").decode()
            if shown != key:
                return [*loc, shown]
            found = _not_unicode(item, [*loc, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_unicode(item, [*loc, i])
            if found is not None:
                return found
    return None


def check_unicode(value: dict[str, Any]) -> None:
    """422 naming the input field holding text that cannot be stored (before anything is written;
    pydantic already refuses such text in the body's own string fields)."""
    try:
        serde.dumps(value)
        return
    except PydanticSerializationError:  # (UnicodeEncodeError inside): find where the text is
        loc = _not_unicode(value, ["input"])
    if loc is None:  # not a text problem: let the start fail with its own error
        return
    where = ".".join(map(str, loc))
    msg = "not valid Unicode text (a lone surrogate such as \\ud800): send UTF-8 text"
    raise ApiError(422, "invalid_input", f"{where}: {msg}", [{"loc": loc, "msg": msg, "type": "unicode"}])


async def workflow_schema(state: ApiState, name: str, version: str | None) -> tuple[str, dict[str, Any]]:
    """The version a new run of ``name`` goes to (``version`` or the active one) and its input schema."""
    version = version or await state.dispatcher.active_version() or "dev"
    info = await state.workflow_info(version, name)
    if info is None:
        raise WorkflowNotFound(f"no workflow {name!r} in version {version!r}")
    return version, info.get("input_schema") or {}


def scoped_key(tenant: str | None, idempotency_key: str) -> str:
    """An idempotency key scoped by tenant, so one tenant's key never finds another's run."""
    return idempotency_key if tenant is None else f"t{len(tenant)}:{tenant}:{idempotency_key}"


async def launch(
    state: ApiState,
    tenant: str | None,
    name: str,
    input: dict[str, Any],
    version: str | None,
    idempotency_key: str | None,
    schema: dict[str, Any] | None = None,
    *,
    same_input: bool = True,
    fairness_key: str | None = None,
    max_concurrency: int | None = None,
) -> tuple[Started, RunRecord | None]:
    """Validate ``input`` and start a run; with a key already used, the existing run and its record
    (409 if that run was started with a different input, unless ``same_input`` is False).
    ``fairness_key`` is scoped by tenant as idempotency keys are (default: the tenant)."""
    if schema is None:
        version, schema = await workflow_schema(state, name, version)
    validate_input(name, schema, input)
    check_unicode(input)
    idem = None if idempotency_key is None else scoped_key(tenant, idempotency_key)
    fair = None if fairness_key is None else scoped_key(tenant, fairness_key)
    if max_concurrency is not None and fair is None:
        if tenant is None:
            raise ApiError(422, "invalid_request", "max_concurrency needs a fairness_key")
        fair = tenant  # (the tenant's own key)
    started = await state.dispatcher.start(
        name, input, version=version, idempotency_key=idem, tenant=tenant or "", fairness_key=fair,
        max_concurrency=max_concurrency,
    )  # fmt: skip
    if started.created:
        state.metrics.runs_started.labels(name).inc()
        return started, None
    record = await state.get_run(started.run_id, tenant)
    if same_input and record.input != input:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"idempotency key already used for run {started.run_id} with a different input",
            {"run_id": started.run_id},
        )
    return started, record


@router.get("/v1/workflows", response_model=WorkflowList, responses=errors_doc(401, 503))
async def list_workflows(state: StateDep, tenant: TenantDep) -> WorkflowList:
    """Workflows registered by workers: the active version's description first, with every version."""
    active = await state.dispatcher.active_version()
    versions = await state.dispatcher.versions()
    registries = await state.dispatcher.reader.registrations(versions)
    # Prefer the active version's description, else the most recently registered version's.
    order = sorted(range(len(versions)), key=lambda i: (versions[i] == active, i), reverse=True)
    seen: dict[str, WorkflowInfo] = {}
    for i in order:
        for name, info in registries[i].items():
            if name not in seen:
                seen[name] = WorkflowInfo(
                    name=name,
                    description=info.get("description") or "",
                    input_schema=info.get("input_schema") or {},
                    output_schema=info.get("output_schema") or {},
                    secret_args=list(info.get("secret_args") or []),
                    version=versions[i],
                    versions=[],
                )
            seen[name].versions.append(versions[i])
    for item in seen.values():
        item.versions.sort(key=versions.index)
    return WorkflowList(active_version=active, versions=versions, workflows=[seen[n] for n in sorted(seen)])


@router.post(
    "/v1/workflows/{name}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StartedRun,
    responses={
        200: {
            "model": RunDetail,
            "description": "With ?wait=: the run finished in time. With Accept: text/event-stream or "
            "application/x-ndjson: the new run's events.",
            "content": STREAM_CONTENT,
        },
        **errors_doc(400, 401, 404, 409, 413, 415, 422, 503),
    },
    dependencies=[Depends(require_json)],
)
async def start_run(
    name: str,
    body: StartRun,
    state: StateDep,
    tenant: TenantDep,
    wait: Annotated[
        float | None, Query(ge=0, le=300, description="Wait up to this many seconds for the result.")
    ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Validate the input against the workflow's schema and queue a run.

    202 with the run's URLs; ``?wait=`` answers 200 with the finished run if it ends in time; a
    streaming Accept header streams the run's events in this response.
    """
    started, record = await launch(
        state, tenant, name, body.input, body.version, body.idempotency_key,
        fairness_key=body.fairness_key, max_concurrency=body.max_concurrency,
    )  # fmt: skip
    run_id = started.run_id
    after, run_status = (1, RunStatus.QUEUED) if record is None else (record.last_seq, record.status)
    fmt = stream_format(accept)
    if fmt is not None:
        return stream_response(state, live_frames(state, run_id, 0, fmt), fmt, run_id)
    if wait:
        done = run_status in TERMINAL_STATUSES or await state.hub.wait_terminal(
            run_id, after, wait, fresh=started.created
        )
        record, objects = await state.run_snapshot(run_id, tenant)
        if done or record.status in TERMINAL_STATUSES:
            detail = await run_detail(state, record, objects)
            return JSONResponse(detail.model_dump(mode="json"), status_code=200)
        run_status = record.status
    body_out = StartedRun(run_id=run_id, status=run_status, created=started.created, **run_urls(run_id))
    return JSONResponse(body_out.model_dump(mode="json"), status_code=202)
