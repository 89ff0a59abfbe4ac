"""Two real servers with TLS walk the admin tutorial, steps 1-7 (host names changed).

``a.test`` and ``b.test`` are two swfed processes on 127.0.0.1, each with a
certificate from one trustme CA, resolving each other through
``[federation.resolve]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for


@pytest.fixture(scope="module")
def net_and_servers(tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[TlsNet, ServerProcess, ServerProcess]]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("fed"), ["a.test", "b.test"])
    with running(a, b):
        yield net, a, b


@pytest.fixture(scope="module")
def users(net_and_servers: tuple[TlsNet, ServerProcess, ServerProcess]) -> dict[str, str]:
    _, a, b = net_and_servers
    return {"admin_a": a.create_user("root", admin=True), "alice": a.create_user("alice"),
            "admin_b": b.create_user("root", admin=True), "bob": b.create_user("bob"),
            "carol": b.create_user("carol")}


@pytest.fixture
async def clients(net_and_servers: tuple[TlsNet, ServerProcess, ServerProcess]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    net, a, b = net_and_servers
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        yield ca, cb


async def set_policy(client: httpx.AsyncClient, admin: str, peer: str) -> None:
    # the tutorial's step 3, verbatim but for the host name
    r = await client.put("/v1/admin/federation/policy", headers=bearer(admin), json={
        "default_mode": "invite_only",
        "allowed_peers": [peer],
        "max_foreign_participants_per_room": 50,
    })
    assert r.status_code == 200, r.text
    assert r.json()["allowed_peers"] == [peer]


async def notifications(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/me/notifications", headers=bearer(token))
    return list(r.json()["data"])


async def accept_invite(client: httpx.AsyncClient, token: str, room_id: str) -> None:
    async def invite() -> str | None:
        for n in await notifications(client, token):
            if n["type"] == "invite" and n["room_id"] == room_id:
                return str(n["invite_id"])
        return None

    invite_id = await wait_for(invite, what="the invite to arrive")
    r = await client.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(token))
    assert r.status_code == 200, r.text


async def bodies(client: httpx.AsyncClient, token: str, room_id: str) -> list[str]:
    r = await client.get(f"/v1/rooms/{room_id}/messages", params={"limit": 200},
                         headers=bearer(token))
    if r.status_code != 200:
        return []
    return [e["content"]["body"] for e in reversed(r.json()["data"]) if e["type"] == "message"]


async def test_tutorial(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                        users: dict[str, str]) -> None:
    ca, cb = clients
    # 1-2. descriptors
    for client, name in ((ca, "a.test"), (cb, "b.test")):
        r = await client.get("/.well-known/scaiwave/server", headers={"Host": name})
        desc = r.json()
        assert desc["server_name"] == name
        assert desc["public_key"].startswith("ed25519:") and len(desc["public_key"]) > 20
        assert desc["protocol_versions"] == ["v1"]
        assert desc["endpoints"] == {
            "send": "/_scaiwave/federation/v1/send",
            "profile": "/_scaiwave/federation/v1/profile/{local_id}",
            "members": "/_scaiwave/federation/v1/rooms/{room_id}/members",
            "backfill": "/_scaiwave/federation/v1/rooms/{room_id}/backfill",
        }
        assert desc["key_id"].startswith("ed25519:") and desc["old_keys"] == []
        assert name in desc["signatures"]

    # 3-4. both policies
    await set_policy(ca, users["admin_a"], "b.test")
    await set_policy(cb, users["admin_b"], "a.test")
    r = await ca.get("/v1/admin/federation/policy", headers=bearer(users["admin_a"]))
    assert r.json()["default_mode"] == "invite_only"

    # 5. federated DM
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 201, r.text
    room_id = r.json()["room_id"]
    assert r.json()["type"] == "dm" and r.json()["federate"] is True
    await accept_invite(cb, users["bob"], room_id)

    async def bob_joined_on_a() -> bool:
        r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(users["alice"]))
        return any(m["id"] == "@bob:b.test" and m["membership"] == "join"
                   for m in r.json()["data"])

    await wait_for(bob_joined_on_a, what="bob's join to reach a.test")
    r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(users["alice"]))
    members = {m["id"]: m for m in r.json()["data"]}
    assert members["@bob:b.test"]["foreign"] is True
    assert members["@alice"]["foreign"] is False
    r = await ca.get(f"/v1/rooms/{room_id}", headers=bearer(users["alice"]))
    assert r.json()["federated"] is True and r.json()["host"] == "a.test"

    # bob sees alice as foreign on his side
    async def alice_on_b() -> bool:
        r = await cb.get(f"/v1/rooms/{room_id}/members", headers=bearer(users["bob"]))
        return r.status_code == 200 and any(m["id"] == "@alice:a.test"
                                            for m in r.json()["data"])

    await wait_for(alice_on_b, what="alice in b.test's member list")

    # messages both ways, a reply, a reaction, a mention
    r = await ca.post(f"/v1/rooms/{room_id}/messages", json={"body": "hi bob"},
                      headers=bearer(users["alice"]))
    first = r.json()["event_id"]
    await wait_for(lambda: _has(cb, users["bob"], room_id, "hi bob"), what="hi bob on b")
    r = await cb.post(f"/v1/rooms/{room_id}/messages",
                      json={"body": "hello @alice", "in_reply_to": first,
                            "mentions": ["@alice:a.test"]}, headers=bearer(users["bob"]))
    assert r.status_code == 201, r.text
    reply = r.json()["event_id"]
    await wait_for(lambda: _has(ca, users["alice"], room_id, "hello @alice"),
                   what="bob's reply on a")
    r = await ca.get(f"/v1/rooms/{room_id}/messages", headers=bearer(users["alice"]))
    got = {e["event_id"]: e for e in r.json()["data"]}
    assert got[reply]["sender"] == "@bob:b.test"
    assert got[reply]["content"]["in_reply_to"] == first

    async def mentioned() -> bool:
        return any(n["type"] == "mention" and n.get("event_id") == reply
                   for n in await notifications(ca, users["alice"]))

    await wait_for(mentioned, what="alice's mention notification on a.test")

    r = await cb.post(f"/v1/rooms/{room_id}/messages/{first}/reactions", json={"key": "🎉"},
                      headers=bearer(users["bob"]))
    assert r.status_code == 201

    async def reacted() -> bool:
        r = await ca.get(f"/v1/rooms/{room_id}/messages", headers=bearer(users["alice"]))
        return any(e["type"] == "reaction" and e["content"] == {"relates_to": first,
                                                                "key": "🎉"}
                   for e in r.json()["data"])

    await wait_for(reacted, what="bob's reaction on a.test")
    r = await ca.post(f"/v1/rooms/{room_id}/messages", json={"body": "ping @bob",
                                                              "mentions": ["@bob:b.test"]},
                      headers=bearer(users["alice"]))
    ping = r.json()["event_id"]

    async def bob_mentioned() -> bool:
        return any(n["type"] == "mention" and n.get("event_id") == ping
                   for n in await notifications(cb, users["bob"]))

    await wait_for(bob_mentioned, what="bob's mention notification on b.test")
    # both sides hold the same history in the same (host) order
    await wait_for(lambda: _same_history(ca, cb, users, room_id), what="same order")

    # 7. peers
    async def peer_row() -> dict[str, Any] | None:
        r = await ca.get("/v1/admin/federation/peers", headers=bearer(users["admin_a"]))
        rows = [p for p in r.json()["data"] if p["server_name"] == "b.test"]
        if rows and rows[0]["events_sent_24h"] >= 3 and rows[0]["queue_depth"] == 0:
            return rows[0]
        return None

    row = await wait_for(peer_row, what="a's peers view")
    assert row["last_error"] is None
    assert row["last_seen"].endswith("Z")
    assert row["events_received_24h"] >= 2
    assert row["protocol_versions"] == ["v1"]


async def _has(client: httpx.AsyncClient, token: str, room_id: str, body: str) -> bool:
    return body in await bodies(client, token, room_id)


async def _same_history(ca: httpx.AsyncClient, cb: httpx.AsyncClient, users: dict[str, str],
                        room_id: str) -> bool:
    a = await bodies(ca, users["alice"], room_id)
    b = await bodies(cb, users["bob"], room_id)
    return a == b and len(a) == 3


async def test_backfill_into_fresh_member(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                                          users: dict[str, str]) -> None:
    ca, cb = clients
    await set_policy(ca, users["admin_a"], "b.test")
    await set_policy(cb, users["admin_b"], "a.test")
    r = await ca.post("/v1/rooms", json={"name": "history", "federate": True},
                      headers=bearer(users["alice"]))
    room_id = r.json()["room_id"]
    for i in range(80):
        await ca.post(f"/v1/rooms/{room_id}/messages", json={"body": f"old {i}"},
                      headers=bearer(users["alice"]))
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@carol:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 201, r.text
    await accept_invite(cb, users["carol"], room_id)
    # the host's answer to the join carried the newest events: the rest is history
    assert await _joined(cb, users["carol"], room_id)
    seen = await bodies(cb, users["carol"], room_id)
    assert 40 <= len(seen) < 80 and seen == [f"old {i}" for i in range(80 - len(seen), 80)]

    r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                      headers=bearer(users["admin_b"]))
    assert r.status_code == 200, r.text
    assert r.json()["events"] >= 80 - len(seen)
    assert await bodies(cb, users["carol"], room_id) == [f"old {i}" for i in range(80)]
    # idempotent: a second backfill stores nothing new
    r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                      headers=bearer(users["admin_b"]))
    assert r.json()["events"] == 0


async def _joined(client: httpx.AsyncClient, token: str, room_id: str) -> bool:
    r = await client.get(f"/v1/rooms/{room_id}", headers=bearer(token))
    return r.status_code == 200


async def test_rooms_that_cannot_federate(clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
                                          users: dict[str, str]) -> None:
    ca, _ = clients
    await set_policy(ca, users["admin_a"], "b.test")
    cases = [({"type": "incognito", "federate": True}, "SW_FED_ROOM_NOT_FEDERATABLE"),
             ({"type": "bridge", "federate": True}, "SW_FED_ROOM_NOT_FEDERATABLE"),
             ({"type": "sidekick", "federate": True}, "SW_FED_ROOM_NOT_FEDERATABLE"),
             ({"type": "standard"}, "SW_FED_ROOM_NOT_FEDERATED")]
    for spec, code in cases:
        r = await ca.post("/v1/rooms", json={"name": "x", **spec}, headers=bearer(users["alice"]))
        room_id = r.json()["room_id"]
        r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:b.test"},
                          headers=bearer(users["alice"]))
        assert r.status_code == 403, (spec, r.text)
        assert r.json()["error"]["code"] == code
    # a peer our policy does not allow
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@eve:evil.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "SW_FED_PEER_UNKNOWN"
    # no such user on the peer: refused at once, no room left behind
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@nobody:b.test"},
                      headers=bearer(users["alice"]))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SW_USER_NOT_FOUND"
