"""What every request handler shares: settings, the Redis client, the dispatcher, the hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from outlast.api.auth import Authenticator
from outlast.api.hub import Hub
from outlast.api.metrics import ApiMetrics
from outlast.control import Dispatcher
from outlast.errors import RunNotFound
from outlast.ids import valid_run_id
from outlast.masking import MASK
from outlast.store.base import RunRecord
from outlast.store.client import RedisClient


@dataclass(frozen=True)
class Settings:
    redis_url: str
    max_body: int
    keepalive: float
    retry_ms: int
    block_ms: int
    send_timeout: float
    retention: float
    max_connections: int | None
    store_retry: float = 30.0


@dataclass
class ApiState:
    settings: Settings
    auth: Authenticator
    metrics: ApiMetrics
    redis: RedisClient
    dispatcher: Dispatcher
    hub: Hub

    async def run_snapshot(self, run_id: str, tenant: str | None) -> tuple[RunRecord, dict[str, Any]]:
        """The run's record and objects read atomically, so objects match ``last_seq`` exactly.

        (Objects read after the record could already include patches past ``last_seq``; a client
        streaming ``?after=last_seq`` would then apply them twice.)
        """
        if not valid_run_id(run_id):
            raise RunNotFound(f"no run {run_id!r}")
        record, objects = await self.dispatcher.reader.snapshot(run_id)
        return self._visible(run_id, record, tenant), objects

    async def get_run(self, run_id: str, tenant: str | None) -> RunRecord:
        """The run's record; RunNotFound if it does not exist or belongs to another tenant."""
        if not valid_run_id(run_id):
            raise RunNotFound(f"no run {run_id!r}")
        return self._visible(run_id, await self.dispatcher.reader.record(run_id), tenant)

    async def position(self, run_id: str, tenant: str | None) -> tuple[int, str]:
        """The run's last seq and status (what a stream checks before it starts: no full record)."""
        if not valid_run_id(run_id):
            raise RunNotFound(f"no run {run_id!r}")
        status, last_seq, owner = await self.dispatcher.reader.position(run_id)
        if status is None or (tenant is not None and owner != tenant):
            raise RunNotFound(f"no run {run_id!r}")
        return last_seq, status

    @staticmethod
    def _visible(run_id: str, record: RunRecord | None, tenant: str | None) -> RunRecord:
        if record is None or (tenant is not None and record.tenant != tenant):
            raise RunNotFound(f"no run {run_id!r}")  # another tenant's run does not exist for you
        return record

    async def workflow_info(self, version: str, name: str) -> dict[str, Any] | None:
        return await self.dispatcher.workflow_info(version, name)

    async def masked_input(self, record: RunRecord) -> dict[str, Any]:
        """The stored input is unmasked (the worker needs it): mask the workflow's secret_args."""
        info = await self.workflow_info(record.version, record.workflow)
        secret = set((info or {}).get("secret_args", ()))
        return {k: (MASK if k in secret else v) for k, v in record.input.items()}


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a thread pool,
# and two thread hops per request cost more than everything else a request does.
async def get_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.outlast)


StateDep = Annotated[ApiState, Depends(get_state)]


async def tenant(request: Request) -> str | None:
    """The caller's tenant (None in open mode); 401 when keys are set and none valid was sent.

    (The Authorization header is read directly, not declared: the OpenAPI document describes it
    as a bearer security scheme instead.)
    """
    return (await get_state(request)).auth.tenant_for(request.headers.get("authorization"))


TenantDep = Annotated[str | None, Depends(tenant)]


def run_urls(run_id: str) -> dict[str, str]:
    return {"url": f"/v1/runs/{run_id}", "events_url": f"/v1/runs/{run_id}/events"}
