"""The API and a worker on a 3-master Valkey cluster (``redis+cluster://``): a run started over
HTTP executes on the worker and streams over SSE exactly once; a cancel reaches the worker through
pub/sub on one node; an idempotent start returns the same run.

The rest of the API package runs on the cluster too (``servers`` in conftest.py is parametrised);
this module is the short, explicit version, with a worker and an API of its own on the session's
cluster, under a version of their own (the package's worker serves ``dev`` there).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from outlast.client import AsyncClient
from outlast.errors import RunFailed
from outlast.store.embedded_cluster import EmbeddedCluster

from .support import ApiServer, assert_exactly_once, read_sse, spawn_worker

pytestmark = pytest.mark.timeout(120)
VERSION = "cluster-api"


@pytest.fixture(scope="module")
def cluster_api(valkey_cluster: EmbeddedCluster) -> Iterator[ApiServer]:
    worker = spawn_worker(valkey_cluster.url, "--concurrency", "20", "--version", VERSION)
    api = ApiServer(valkey_cluster.url)
    try:
        worker.wait_ready()
        api.proc.wait_ready()
        yield api
    finally:
        api.stop()
        worker.stop()


@pytest.fixture
async def http(cluster_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster_api.base_url, timeout=30) as client:
        yield client


async def test_a_run_started_over_http_runs_and_streams_once(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/workflows/ticks/runs", json={"input": {"n": 200, "every": 1}, "version": VERSION}
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    path = f"/v1/runs/{run_id}/events"
    first = await read_sse(http, path, stop_after=50)  # a drop mid-run, then a resume from its seq
    rest = await read_sse(http, path, params={"after": first[-1].seq})
    assert_exactly_once(first + rest, last=203)  # run.queued, run.started, 200 ticks, run.completed
    record = (await http.get(f"/v1/runs/{run_id}")).json()
    assert (record["status"], record["result"]) == ("completed", 200)
    listed = (await http.get("/v1/runs")).json()
    assert run_id in [run["run_id"] for run in listed["runs"]]


async def test_a_cancel_reaches_the_worker_and_a_repeated_start_is_the_same_run(
    http: httpx.AsyncClient, cluster_api: ApiServer
) -> None:
    gate = f"gate:{uuid.uuid4().hex}"  # never opened: the run holds until cancelled
    body = {"input": {"n": 3, "gate": gate}, "idempotency_key": uuid.uuid4().hex, "version": VERSION}
    started = await http.post("/v1/workflows/ticks/runs", json=body)
    again = await http.post("/v1/workflows/ticks/runs", json=body)
    run_id = started.json()["run_id"]
    assert again.json()["run_id"] == run_id
    async with aconnect_sse(http, "GET", f"/v1/runs/{run_id}/events") as source:
        async for sse in source.aiter_sse():  # the worker is inside the gated step
            if sse.event == "step.started":
                break
    response = await http.post(f"/v1/runs/{run_id}/cancel")
    assert (response.status_code, response.json()["status"]) == (202, "cancelling")
    async with AsyncClient(cluster_api.base_url) as client:
        with pytest.raises(RunFailed) as failed:
            await client.result(run_id, timeout=20)
    assert failed.value.status == "cancelled"
