"""``/v1/workers`` and ``/v1/deploy``: the compute fleet as the console's workers page shows it.

Reading is open to every caller (the fleet is shared; no run ids of any tenant are shown).
Promoting and rolling back move every tenant's new runs, so they need a key of a tenant named
in ``OUTLAST_ADMIN_TENANTS`` (in open mode anyone may): see :mod:`outlast.api.auth`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from outlast.api.errors import ApiError
from outlast.api.schemas import (
    DeployChange,
    DeployStatus,
    Promote,
    VersionStatus,
    WorkerInfo,
    WorkerList,
    errors_doc,
)
from outlast.api.state import ApiState, StateDep, TenantDep
from outlast.errors import ConfigError

router = APIRouter()


def worker_info(raw: dict[str, Any]) -> WorkerInfo:
    running = raw.get("running") or []
    return WorkerInfo(
        id=str(raw.get("id", "")),
        host=str(raw.get("host", "")),
        pid=int(raw.get("pid") or 0),
        version=str(raw.get("version", "")),
        slots=int(raw.get("concurrency") or 0),
        running=len(running) if isinstance(running, list | dict) else int(running),
        draining=bool(raw.get("draining")),
        heartbeat_age=round(float(raw.get("heartbeat_age") or 0.0), 3),
    )


@router.get("/v1/workers", response_model=WorkerList, responses=errors_doc(401, 503))
async def list_workers(state: StateDep, tenant: TenantDep) -> WorkerList:
    """Live workers (a heartbeat within their lease timeout): version, slots in use, draining."""
    return WorkerList(workers=[worker_info(w) for w in await state.dispatcher.workers()])


async def deploy_status(state: ApiState, tenant: str | None) -> DeployStatus:
    report = await state.dispatcher.deploy_status()
    return DeployStatus(
        active=report["active"],
        versions=[VersionStatus.model_validate(v) for v in report["versions"]],
        can_deploy=state.auth.can_deploy(tenant),
    )


@router.get("/v1/deploy", response_model=DeployStatus, responses=errors_doc(401, 503))
async def get_deploy(state: StateDep, tenant: TenantDep) -> DeployStatus:
    """The active version, and per version its workers, runs in flight and queue depth.

    ``can_deploy`` says whether this caller's key may promote and roll back.
    """
    return await deploy_status(state, tenant)


def _require_admin(state: ApiState, tenant: str | None) -> None:
    if not state.auth.can_deploy(tenant):
        raise ApiError(
            403,
            "forbidden",
            "this API key may not change the active version: its tenant must be listed in "
            "OUTLAST_ADMIN_TENANTS",
        )


@router.post("/v1/deploy/promote", response_model=DeployChange, responses=errors_doc(401, 403, 404, 422, 503))
async def promote(body: Promote, state: StateDep, tenant: TenantDep) -> DeployChange:
    """Send new runs to ``version`` (one a worker registered); runs already started stay put."""
    _require_admin(state, tenant)
    known = await state.dispatcher.versions()
    if body.version not in known:
        raise ApiError(
            404,
            "version_not_found",
            f"no worker ever registered version {body.version!r}; known: {', '.join(known) or 'none'}",
            {"versions": known},
        )
    try:
        previous = await state.dispatcher.promote(body.version)
    except ConfigError as exc:  # (unregistered between the check and the switch)
        raise ApiError(404, "version_not_found", str(exc)) from None
    return DeployChange(active=body.version, previous=previous)


@router.post("/v1/deploy/rollback", response_model=DeployChange, responses=errors_doc(401, 403, 409, 503))
async def rollback(state: StateDep, tenant: TenantDep) -> DeployChange:
    """Make the previously active version active again (409 when there was none)."""
    _require_admin(state, tenant)
    before = await state.dispatcher.active_version()
    try:
        version = await state.dispatcher.rollback()
    except ConfigError as exc:
        raise ApiError(409, "nothing_to_roll_back", str(exc)) from None
    return DeployChange(active=version, previous=before)
