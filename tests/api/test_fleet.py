"""/v1/workers and /v1/deploy over a real socket: the fleet as the console shows it, and who may
promote and roll back (open mode: anyone; with keys: tenants in OUTLAST_ADMIN_TENANTS)."""

from __future__ import annotations

import httpx

from .conftest import KEYS, Servers
from .support import ApiServer


async def test_workers_and_deploy_status(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/workers")
    assert reply.status_code == 200
    workers = reply.json()["workers"]
    assert workers
    assert all(w["slots"] == 300 and not w["draining"] for w in workers)
    assert all(isinstance(w["running"], int) for w in workers)  # counts, never other tenants' run ids
    deploy = (await http.get("/v1/deploy")).json()
    assert deploy["can_deploy"] is True  # open mode
    assert deploy["active"] in [v["version"] for v in deploy["versions"]]
    row = next(v for v in deploy["versions"] if v["version"] == deploy["active"])
    assert row["state"] == "active"
    assert row["workers"] >= 1
    assert row["queued"] >= 0


async def test_promote_validates_the_version(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/deploy/promote", json={"version": "never-seen"})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "version_not_found"
    reply = await http.post("/v1/deploy/promote", json={"version": "bad version!"})
    assert reply.status_code == 422
    active = (await http.get("/v1/deploy")).json()["active"]
    reply = await http.post("/v1/deploy/promote", json={"version": active})  # already active: a no-op
    assert reply.status_code == 200
    assert reply.json() == {"active": active, "previous": active}


async def test_only_admin_tenants_may_deploy(servers: Servers) -> None:
    env = {
        "OUTLAST_API_KEYS": ",".join(f"{k}:{t}" for k, t in KEYS.items()),
        "OUTLAST_ADMIN_TENANTS": "tenant-a",
    }
    api = ApiServer(servers.redis_url, factory_env=env)
    try:
        api.proc.wait_ready()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            assert (await http.get("/v1/workers")).status_code == 401
            admin = {"Authorization": "Bearer key-a"}
            other = {"Authorization": "Bearer key-b"}
            assert (await http.get("/v1/deploy", headers=other)).json()["can_deploy"] is False
            assert (await http.get("/v1/deploy", headers=admin)).json()["can_deploy"] is True
            active = (await http.get("/v1/deploy", headers=admin)).json()["active"]
            refused = await http.post("/v1/deploy/promote", json={"version": active}, headers=other)
            assert refused.status_code == 403
            assert "OUTLAST_ADMIN_TENANTS" in refused.json()["error"]["message"]
            assert (await http.post("/v1/deploy/rollback", headers=other)).status_code == 403
            allowed = await http.post("/v1/deploy/promote", json={"version": active}, headers=admin)
            assert allowed.status_code == 200
    finally:
        api.stop()


async def test_console_page_and_files_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/console/app.js">' in page.text
    module = await http.get("/console/app.js")
    assert module.status_code == 200
    assert 'from "/client.js"' in module.text
    again = await http.get("/console/app.js", headers={"If-None-Match": module.headers["etag"]})
    assert again.status_code == 304
    missing = await http.get("/console/..%2Fsecrets.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
