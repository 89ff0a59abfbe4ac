"""Federation policy between two real servers: every mode, list and limit.

Each refusal must reach the user with its own ``SW_FED_…`` code, and the
refusing server must log it (``federation.policy_rejected``) and record it
(``/v1/admin/federation/rejected`` and ``sw_audit``). Nothing is lost while a
policy holds traffic back: it flows once the policy allows it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for
from tests.test_federation import accept_invite, bodies

Servers = tuple[TlsNet, ServerProcess, ServerProcess]
Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]

OPEN_TO = {"default_mode": "invite_only", "denied_peers": [], "federation_enabled": True,
           "max_foreign_participants_per_room": 50, "max_backfill_events_per_request": 500}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("policy"), ["a.test", "b.test"])
    with running(a, b):
        yield net, a, b


@pytest.fixture(scope="module")
def users(servers: Servers) -> dict[str, str]:
    _, a, b = servers
    return {"admin_a": a.create_user("root", admin=True), "alice": a.create_user("alice"),
            "admin_b": b.create_user("root", admin=True), "bob": b.create_user("bob"),
            "carol": b.create_user("carol"), "dave": b.create_user("dave")}


@pytest.fixture
async def clients(servers: Servers, users: dict[str, str]) -> AsyncIterator[Clients]:
    net, a, b = servers
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        # every test starts from both sides allowing each other
        await put_policy(ca, users["admin_a"], {**OPEN_TO, "allowed_peers": ["b.test"]})
        await put_policy(cb, users["admin_b"], {**OPEN_TO, "allowed_peers": ["a.test"]})
        yield ca, cb


async def put_policy(client: httpx.AsyncClient, admin: str, body: dict[str, Any]) -> None:
    r = await client.put("/v1/admin/federation/policy", headers=bearer(admin), json=body)
    assert r.status_code == 200, r.text


async def dm(ca: httpx.AsyncClient, token: str, fqid: str) -> httpx.Response:
    return await ca.post("/v1/me/federated-dms", json={"fqid": fqid}, headers=bearer(token))


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def rejected(client: httpx.AsyncClient, admin: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/admin/federation/rejected", params=params, headers=bearer(admin))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def audit(client: httpx.AsyncClient, admin: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/admin/audit", params=params, headers=bearer(admin))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def shared_room(ca: httpx.AsyncClient, cb: httpx.AsyncClient, users: dict[str, str],
                      who: str = "bob") -> str:
    """A room hosted on a.test with alice and ``who`` of b.test joined."""
    r = await ca.post("/v1/rooms", json={"name": "shared", "federate": True},
                      headers=bearer(users["alice"]))
    room_id = str(r.json()["room_id"])
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": f"@{who}:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 201, r.text
    await accept_invite(cb, users[who], room_id)

    async def joined_on_a() -> bool:
        r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(users["alice"]))
        return any(m["id"] == f"@{who}:b.test" and m["membership"] == "join"
                   for m in r.json()["data"])

    await wait_for(joined_on_a, what=f"{who} joined on a.test")
    return room_id


async def post(client: httpx.AsyncClient, token: str, room_id: str, body: str) -> httpx.Response:
    return await client.post(f"/v1/rooms/{room_id}/messages", json={"body": body},
                             headers=bearer(token))


# -- the peer's policy refuses us ------------------------------------------------


@pytest.mark.parametrize(("b_policy", "code"), [
    ({"default_mode": "closed"}, "SW_FED_CLOSED"),
    ({"allowed_peers": []}, "SW_FED_PEER_UNKNOWN"),
    ({"denied_peers": ["a.test"], "default_mode": "open"}, "SW_FED_PEER_DENIED"),
    ({"denied_peers": ["*.test"], "allowed_peers": ["a.test"]}, "SW_FED_PEER_DENIED"),
    ({"federation_enabled": False}, "SW_FED_DISABLED"),
])
async def test_peer_policy_refuses(servers: Servers, clients: Clients, users: dict[str, str],
                                   b_policy: dict[str, Any], code: str) -> None:
    _, _, b = servers
    ca, cb = clients
    await put_policy(cb, users["admin_b"], b_policy)
    r = await dm(ca, users["alice"], "@bob:b.test")
    assert r.status_code == 403, r.text
    assert error_code(r) == code
    # the refusing side logged it under the spec's name, and recorded it
    assert any(line.get("reason") == code and line.get("peer") == "a.test"
               for line in b.logs("federation.policy_rejected"))
    rows = await rejected(cb, users["admin_b"], peer="a.test", reason=code)
    assert rows and rows[0]["created_at"].endswith("Z")
    assert any(row["reason"] == code for row in await audit(
        cb, users["admin_b"], action="federation.request.rejected", peer="a.test"))


async def test_open_mode_needs_no_list(clients: Clients, users: dict[str, str]) -> None:
    ca, cb = clients
    await put_policy(cb, users["admin_b"], {"default_mode": "open", "allowed_peers": []})
    r = await dm(ca, users["alice"], "@bob:b.test")
    assert r.status_code == 201, r.text
    await accept_invite(cb, users["bob"], r.json()["room_id"])


# -- our own policy refuses --------------------------------------------------------


@pytest.mark.parametrize(("a_policy", "code"), [
    ({"default_mode": "closed"}, "SW_FED_CLOSED"),
    ({"allowed_peers": []}, "SW_FED_PEER_UNKNOWN"),
    ({"denied_peers": ["b.test"]}, "SW_FED_PEER_DENIED"),
    ({"federation_enabled": False}, "SW_FED_DISABLED"),
])
async def test_own_policy_refuses(servers: Servers, clients: Clients, users: dict[str, str],
                                  a_policy: dict[str, Any], code: str) -> None:
    _, a, _ = servers
    ca, _ = clients
    await put_policy(ca, users["admin_a"], a_policy)
    r = await dm(ca, users["alice"], "@bob:b.test")
    assert r.status_code == 403 and error_code(r) == code, r.text
    assert any(line.get("reason") == code and line.get("local") is True
               for line in a.logs("federation.policy_rejected"))
    rows = await audit(ca, users["admin_a"], action="federation.local.refused")
    assert any(row["reason"] == code and row["actor"] == "@alice:a.test" for row in rows)


async def test_policy_validation(clients: Clients, users: dict[str, str]) -> None:
    ca, _ = clients
    for body, field in [({"default_mode": "sometimes"}, "default_mode"),
                        ({"allowed_peers": ["not a host!"]}, "allowed_peers"),
                        ({"denied_peers": "b.test"}, "denied_peers"),
                        ({"max_foreign_participants_per_room": -1},
                         "max_foreign_participants_per_room"),
                        ({"max_backfill_events_per_request": 5000},
                         "max_backfill_events_per_request"),
                        ({"federation_enabled": "no"}, "federation_enabled"),
                        ({"default_mdoe": "open"}, "default_mdoe")]:
        r = await ca.put("/v1/admin/federation/policy", json=body,
                         headers=bearer(users["admin_a"]))
        assert r.status_code == 400, (body, r.text)
        assert error_code(r) == "SW_BAD_POLICY" and field in r.json()["error"]["message"]
    r = await ca.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                     headers=bearer(users["alice"]))
    assert r.status_code == 403 and error_code(r) == "SW_NOT_ADMIN"
    # a policy change is audited with before and after
    rows = await audit(ca, users["admin_a"], action="federation.policy.update")
    assert rows and rows[0]["details"]["after"]["allowed_peers"] == ["b.test"]


# -- limits ----------------------------------------------------------------------


async def test_foreign_participant_limit_both_sides(clients: Clients,
                                                    users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    # the host's limit: bob is in, a second foreign participant is one too many
    await put_policy(ca, users["admin_a"], {"max_foreign_participants_per_room": 1})
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@carol:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 403 and error_code(r) == "SW_FED_ROOM_FULL", r.text
    # the member server's limit: b.test accepts no room with foreign participants
    await put_policy(ca, users["admin_a"], {"max_foreign_participants_per_room": 50})
    await put_policy(cb, users["admin_b"], {"max_foreign_participants_per_room": 0})
    r = await ca.post("/v1/rooms", json={"name": "second", "federate": True},
                      headers=bearer(users["alice"]))
    second = r.json()["room_id"]
    r = await ca.post(f"/v1/rooms/{second}/invites", json={"fqid": "@dave:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 201  # queued: b.test decides when it arrives

    async def refused_on_b() -> bool:
        rows = await rejected(cb, users["admin_b"], reason="SW_FED_ROOM_FULL")
        return any(row["room_id"] == second for row in rows)

    await wait_for(refused_on_b, what="b.test to refuse the invite")
    r = await cb.get("/v1/me/notifications", headers=bearer(users["dave"]))
    assert not [n for n in r.json()["data"] if n.get("room_id") == second]

    # a.test learns why: the refusal is in its rejected view
    async def refused_seen_on_a() -> bool:
        rows = await rejected(ca, users["admin_a"], peer="b.test", reason="SW_FED_ROOM_FULL")
        return any(row["room_id"] == second for row in rows)

    await wait_for(refused_seen_on_a, what="a.test to record b.test's refusal")


async def test_backfill_limit_and_refusal(servers: Servers, clients: Clients,
                                          users: dict[str, str]) -> None:
    _, a, _ = servers
    ca, cb = clients
    await put_policy(ca, users["admin_a"], {"max_backfill_events_per_request": 3})
    r = await ca.post("/v1/rooms", json={"name": "history", "federate": True},
                      headers=bearer(users["alice"]))
    room_id = r.json()["room_id"]
    for i in range(10):
        await post(ca, users["alice"], room_id, f"old {i}")
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@carol:b.test"},
                      headers=bearer(users["alice"]))
    await accept_invite(cb, users["carol"], room_id)

    async def carol_in() -> bool:
        r = await cb.get(f"/v1/rooms/{room_id}", headers=bearer(users["carol"]))
        return r.status_code == 200

    await wait_for(carol_in, what="carol joined")
    # pages of at most 3: still all of the history, in order
    r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                      headers=bearer(users["admin_b"]))
    assert r.status_code == 200, r.text
    assert r.json()["pulled"] >= 10
    assert await bodies(cb, users["carol"], room_id) == [f"old {i}" for i in range(10)]

    await put_policy(ca, users["admin_a"], {"max_backfill_events_per_request": 0})
    r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                      headers=bearer(users["admin_b"]))
    assert r.status_code == 403 and error_code(r) == "SW_FED_BACKFILL_REFUSED", r.text
    assert any(line.get("reason") == "SW_FED_BACKFILL_REFUSED"
               for line in a.logs("federation.policy_rejected"))
    assert await rejected(ca, users["admin_a"], reason="SW_FED_BACKFILL_REFUSED")


# -- the per-room flag, and federation off tenant-wide -----------------------------


async def test_room_flag_on_the_member_side(clients: Clients, users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    r = await cb.patch(f"/v1/rooms/{room_id}", json={"federate": False},
                       headers=bearer(users["bob"]))
    assert r.status_code == 403 and error_code(r) == "SW_NOT_ROOM_ADMIN"
    r = await cb.patch(f"/v1/rooms/{room_id}", json={"federate": False},
                       headers=bearer(users["admin_b"]))
    assert r.status_code == 404  # an admin who is not in the room cannot see it
    # b's admin joins through an invite, then switches b.test's copy off
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@root:b.test"},
                      headers=bearer(users["alice"]))
    await accept_invite(cb, users["admin_b"], room_id)
    await wait_for(lambda: _member_on(cb, users["admin_b"], room_id), what="root joined")
    r = await cb.patch(f"/v1/rooms/{room_id}", json={"federate": False},
                       headers=bearer(users["admin_b"]))
    assert r.status_code == 200 and r.json()["federate"] is False, r.text

    r = await post(cb, users["bob"], room_id, "from b while off")
    assert r.status_code == 403 and error_code(r) == "SW_FED_ROOM_NOT_FEDERATED"
    r = await post(ca, users["alice"], room_id, "from a while b is off")
    assert r.status_code == 201

    async def b_refused() -> bool:
        rows = await rejected(cb, users["admin_b"], peer="a.test",
                              reason="SW_FED_ROOM_NOT_FEDERATED")
        return any(row["room_id"] == room_id for row in rows)

    await wait_for(b_refused, what="b.test to refuse the room's events")
    assert "from a while b is off" not in await bodies(cb, users["bob"], room_id)

    r = await cb.patch(f"/v1/rooms/{room_id}", json={"federate": True},
                       headers=bearer(users["admin_b"]))
    assert r.status_code == 200
    r = await post(ca, users["alice"], room_id, "back on")
    await wait_for(lambda: _has(cb, users["bob"], room_id, "back on"), what="flow again")
    r = await post(cb, users["bob"], room_id, "b back on")
    assert r.status_code == 201
    await wait_for(lambda: _has(ca, users["alice"], room_id, "b back on"), what="b to a")
    rows = await audit(cb, users["admin_b"], action="federation.room.federate")
    assert [row["details"]["after"] for row in rows[:2]] == [True, False]


async def test_room_flag_on_the_host_side(clients: Clients, users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    r = await ca.patch(f"/v1/rooms/{room_id}", json={"federate": False},
                       headers=bearer(users["alice"]))  # alice created it
    assert r.status_code == 200 and r.json()["federate"] is False
    r = await post(ca, users["alice"], room_id, "kept local")
    assert r.status_code == 201
    r = await post(cb, users["bob"], room_id, "refused by the host")
    assert r.status_code == 201  # queued; the host decides

    async def host_refused() -> bool:
        rows = await rejected(ca, users["admin_a"], peer="b.test",
                              reason="SW_FED_ROOM_NOT_FEDERATED")
        return any(row["room_id"] == room_id for row in rows)

    await wait_for(host_refused, what="a.test to refuse bob's message")
    assert "refused by the host" not in await bodies(ca, users["alice"], room_id)
    assert "kept local" not in await bodies(cb, users["bob"], room_id)
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@carol:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 403 and error_code(r) == "SW_FED_ROOM_NOT_FEDERATED"
    for room_type in ("incognito", "bridge", "sidekick"):
        r = await ca.post("/v1/rooms", json={"name": "x", "type": room_type},
                          headers=bearer(users["alice"]))
        r = await ca.patch(f"/v1/rooms/{r.json()['room_id']}", json={"federate": True},
                           headers=bearer(users["alice"]))
        assert r.status_code == 403 and error_code(r) == "SW_FED_ROOM_NOT_FEDERATABLE"
    r = await ca.patch(f"/v1/rooms/{room_id}", json={"federate": "yes"},
                       headers=bearer(users["alice"]))
    assert r.status_code == 400 and error_code(r) == "SW_BAD_TYPE"


async def test_tenant_wide_off_holds_traffic_without_losing_it(
        clients: Clients, users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    await put_policy(cb, users["admin_b"], {"federation_enabled": False})
    # b's users can still talk locally; their messages wait in b's outbox
    r = await post(cb, users["bob"], room_id, "held on b")
    assert r.status_code == 201
    # a's messages are refused by b for now and wait in a's outbox
    r = await post(ca, users["alice"], room_id, "held on a")
    assert r.status_code == 201

    async def peer_error(client: httpx.AsyncClient, admin: str, peer: str) -> str | None:
        r = await client.get("/v1/admin/federation/peers", headers=bearer(admin))
        for row in r.json()["data"]:
            if row["server_name"] == peer and row["queue_depth"] and row["last_error"]:
                return str(row["last_error"])
        return None

    err_b = await wait_for(lambda: peer_error(cb, users["admin_b"], "a.test"),
                           what="b's queue held")
    assert err_b.startswith("SW_FED_DISABLED")
    err_a = await wait_for(lambda: peer_error(ca, users["admin_a"], "b.test"),
                           what="a's queue held")
    assert err_a.startswith("SW_FED_DISABLED")
    r = await dm(ca, users["alice"], "@carol:b.test")
    assert r.status_code == 403 and error_code(r) == "SW_FED_DISABLED"

    await put_policy(cb, users["admin_b"], {"federation_enabled": True})
    r = await ca.post("/v1/admin/federation/peers/b.test/retry",
                      headers=bearer(users["admin_a"]))
    assert r.status_code == 200
    await wait_for(lambda: _has(cb, users["bob"], room_id, "held on a"), what="a to b")
    await wait_for(lambda: _has(ca, users["alice"], room_id, "held on b"), what="b to a")


async def _has(client: httpx.AsyncClient, token: str, room_id: str, body: str) -> bool:
    return body in await bodies(client, token, room_id)


async def _member_on(client: httpx.AsyncClient, token: str, room_id: str) -> bool:
    r = await client.get(f"/v1/rooms/{room_id}", headers=bearer(token))
    return r.status_code == 200
