"""Tenant isolation: a user of one tenant can't see, search or stream another's."""

from __future__ import annotations

import httpx
import pytest
import trio

from tests.conftest import bearer
from tests.harness import ServerProcess

OTHER = "other.test"


@pytest.fixture(scope="module")
def setup(server: ServerProcess) -> dict[str, str]:
    server.cli("admin", "tenant", "create", OTHER)
    return {
        "mallory": server.create_user("mallory"),  # default tenant
        "olga": server.create_user("olga", tenant=OTHER),
        # the same local id on both tenants is two different people
        "sam_default": server.create_user("sam"),
        "sam_other": server.create_user("sam", tenant=OTHER),
    }


def other(token: str) -> dict[str, str]:
    return {**bearer(token), "Host": OTHER}


async def test_tenant_routing_by_host(client: httpx.AsyncClient, setup: dict[str, str]) -> None:
    r = await client.get("/v1/me", headers=other(setup["olga"]))
    assert r.json()["fqid"] == "@olga:other.test"
    r = await client.get("/v1/me", headers=other(setup["sam_other"]))
    assert r.json()["fqid"] == "@sam:other.test"
    r = await client.get("/v1/me", headers=bearer(setup["sam_default"]))
    assert r.json()["fqid"] == "@sam:localhost"
    # a token is only valid at its own tenant
    r = await client.get("/v1/me", headers=bearer(setup["olga"]))
    assert r.status_code == 401
    r = await client.get("/v1/me", headers=other(setup["mallory"]))
    assert r.status_code == 401


async def test_other_tenant_invisible(client: httpx.AsyncClient,
                                      setup: dict[str, str]) -> None:
    olga, mallory = setup["olga"], setup["mallory"]
    r = await client.post("/v1/rooms", json={"name": "olga's"}, headers=other(olga))
    room_id = r.json()["room_id"]
    assert room_id.endswith(":other.test")
    r = await client.post(f"/v1/rooms/{room_id}/messages", json={"body": "zebra secrets"},
                          headers=other(olga))
    event_id = r.json()["event_id"]

    async with client.stream("GET", "/v1/me/stream",
                             headers={**bearer(mallory), "Last-Event-ID": "0"}) as stream:
        lines: list[str] = []
        with trio.move_on_after(1.0):
            async for line in stream.aiter_lines():
                lines.append(line)
        assert not any("zebra" in line or room_id in line for line in lines)

    for method, path, body in [
        ("GET", f"/v1/rooms/{room_id}", None),
        ("GET", f"/v1/rooms/{room_id}/messages", None),
        ("GET", f"/v1/rooms/{room_id}/members", None),
        ("POST", f"/v1/rooms/{room_id}/messages", {"body": "hi"}),
        ("POST", f"/v1/rooms/{room_id}/join", None),
        ("POST", f"/v1/rooms/{room_id}/messages/{event_id}/reactions", {"key": "x"}),
    ]:
        r = await client.request(method, path, json=body, headers=bearer(mallory))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"
    r = await client.get("/v1/search", params={"q": "zebra"}, headers=bearer(mallory))
    assert r.json() == {"data": []}
    # and a default-tenant user cannot invite an other-tenant user as if local
    r = await client.post("/v1/rooms", json={"name": "m"}, headers=bearer(mallory))
    mroom = r.json()["room_id"]
    r = await client.post(f"/v1/rooms/{mroom}/invites", json={"fqid": "@olga"},
                          headers=bearer(mallory))
    assert r.json()["error"]["code"] == "SW_USER_NOT_FOUND"


async def test_tenant_created_while_running_is_served_at_once(
        client: httpx.AsyncClient, server: ServerProcess) -> None:
    # Back to back, faster than any periodic reload: each new Host is its own
    # tenant from its first request, with its signing key already published.
    for i in range(4):
        name = f"fresh{i}.test"
        server.cli("admin", "tenant", "create", name)
        r = await client.get("/.well-known/scaiwave/server", headers={"Host": name})
        assert r.json()["server_name"] == name, r.text
        assert r.json()["public_key"].startswith("ed25519:"), r.text
        token = server.create_user("nina", tenant=name)
        r = await client.get("/v1/me", headers={**bearer(token), "Host": name})
        assert r.status_code == 200 and r.json()["fqid"] == f"@nina:{name}", r.text
    # Unknown Hosts are the default tenant's, and cost no reload each.
    before = server.logs("tenant.discovered")
    for _ in range(20):
        r = await client.get("/.well-known/scaiwave/server", headers={"Host": "nobody.test"})
        assert r.json()["server_name"] == "localhost"
    assert server.logs("tenant.discovered") == before
