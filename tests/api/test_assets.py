"""``/client.js`` and ``/client.d.ts``: the browser client, served from the installed package."""

from __future__ import annotations

from importlib import resources

import httpx

from .conftest import Servers


def _packaged(name: str) -> bytes:
    return resources.files("outlast.clients").joinpath("js", name).read_bytes()


async def test_client_js_is_the_packaged_module_with_revalidation(http: httpx.AsyncClient) -> None:
    response = await http.get("/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == _packaged("outlast.js")
    assert b"export function createClient" in response.content
    assert response.headers["cache-control"] == "no-cache"
    again = await http.get("/client.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


async def test_types_are_served_too(http: httpx.AsyncClient) -> None:
    response = await http.get("/client.d.ts")
    assert response.status_code == 200
    assert response.content == _packaged("outlast.d.ts")


async def test_the_client_needs_no_api_key(servers: Servers) -> None:
    async with httpx.AsyncClient(base_url=servers.keyed.base_url, timeout=30) as http:
        assert (await http.get("/v1/runs")).status_code == 401
        response = await http.get("/client.js")
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
