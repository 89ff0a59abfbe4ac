"""Durable delivery and key rotation between two real servers.

- The receiver is down while 500 messages are sent: once it is back, all 500
  arrive exactly once, in order.
- The sender is killed with SIGKILL mid-stream and restarted: the same.
- After ``key rotate`` the peer picks the new key up by itself; events signed
  with the old key keep verifying during the overlap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import bearer, peer_row
from tests.harness import ServerProcess, TlsNet, federated_servers, wait_for

OPEN = {"default_mode": "open"}


async def setup_pair(tmp_path: Path) -> tuple[TlsNet, ServerProcess, ServerProcess,
                                               dict[str, str]]:
    net, (a, b) = federated_servers(tmp_path, ["a.test", "b.test"])
    a.start()
    b.start()
    tokens = {"admin_a": a.create_user("root", admin=True), "alice": a.create_user("alice"),
              "admin_b": b.create_user("root", admin=True), "bob": b.create_user("bob")}
    return net, a, b, tokens


async def open_policies(ca: httpx.AsyncClient, cb: httpx.AsyncClient,
                        tokens: dict[str, str]) -> None:
    for client, admin in ((ca, tokens["admin_a"]), (cb, tokens["admin_b"])):
        r = await client.put("/v1/admin/federation/policy", json=OPEN, headers=bearer(admin))
        assert r.status_code == 200, r.text


async def dm(ca: httpx.AsyncClient, cb: httpx.AsyncClient, tokens: dict[str, str]) -> str:
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                      headers=bearer(tokens["alice"]))
    assert r.status_code == 201, r.text
    room_id = str(r.json()["room_id"])

    async def invite_id() -> str | None:
        r = await cb.get("/v1/me/notifications", headers=bearer(tokens["bob"]))
        ids = [n["invite_id"] for n in r.json()["data"] if n.get("room_id") == room_id]
        return ids[0] if ids else None

    iid = await wait_for(invite_id, what="invite on b")
    r = await cb.post(f"/v1/me/invites/{iid}/accept", headers=bearer(tokens["bob"]))
    assert r.status_code == 200

    async def joined() -> bool:
        r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(tokens["alice"]))
        return any(m["fqid"] == "@bob:b.test" and m["membership"] == "join"
                   for m in r.json()["data"])

    await wait_for(joined, what="bob joined on a")
    return room_id


async def history(client: httpx.AsyncClient, token: str, room_id: str) -> list[str]:
    out: list[str] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        r = await client.get(f"/v1/rooms/{room_id}/messages", params=params,
                             headers=bearer(token))
        if r.status_code != 200:
            return []
        page = r.json()
        out += [e["content"]["body"] for e in page["data"] if e["type"] == "message"]
        if "next" not in page:
            return list(reversed(out))
        params = {"limit": 200, "before": page["next"]}


async def send_many(client: httpx.AsyncClient, token: str, room_id: str, prefix: str,
                    n: int) -> None:
    for i in range(n):
        r = await client.post(f"/v1/rooms/{room_id}/messages", json={"body": f"{prefix} {i}"},
                              headers=bearer(token))
        assert r.status_code == 201, r.text


async def dm_queued_while_b_is_down(ca: httpx.AsyncClient, cb: httpx.AsyncClient,
                                    tokens: dict[str, str], b: ServerProcess, prefix: str,
                                    n: int) -> str:
    """Open policies, a DM alice-bob; then b.test stops and alice posts ``{prefix} {i}``
    n times (queued at a.test). Returns the room id."""
    await open_policies(ca, cb, tokens)
    room_id = await dm(ca, cb, tokens)
    assert b.stop() == 0
    await send_many(ca, tokens["alice"], room_id, prefix, n)
    return room_id


def clients(net: TlsNet, a: ServerProcess, b: ServerProcess
            ) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    ctx = net.ssl_context()
    return (httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=30),
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=30))


async def test_receiver_down_then_back(tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            room_id = await dm_queued_while_b_is_down(ca, cb, tokens, b, "while down", 500)

            async def queued() -> bool:
                row = await peer_row(ca, tokens["admin_a"], "b.test")
                return row["queue_depth"] == 500 and row["last_error"] is not None

            await wait_for(queued, what="a queueing for b and showing the error")
            b.start()
            # the admin's retry wakes the backed-off queue now, not at the next retry
            r = await ca.post("/v1/admin/federation/peers/b.test/retry",
                              headers=bearer(tokens["admin_a"]))
            assert r.status_code == 200
            expected = [f"while down {i}" for i in range(500)]
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), expected),
                           timeout=60, what="all 500 on b")
    finally:
        a.kill()
        b.kill()


async def test_sender_killed_mid_stream(tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            await open_policies(ca, cb, tokens)
            room_id = await dm(ca, cb, tokens)
            await send_many(ca, tokens["alice"], room_id, "burst", 300)
            a.kill()  # SIGKILL while the outbox is draining
        a.start()
        ca, cb = clients(net, a, b)
        async with ca, cb:
            expected = [f"burst {i}" for i in range(300)]
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), expected),
                           timeout=60, what="all 300 on b after the restart")
    finally:
        a.kill()
        b.kill()


async def test_key_rotation(tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            await open_policies(ca, cb, tokens)
            room_id = await dm(ca, cb, tokens)
            await send_many(ca, tokens["alice"], room_id, "old key", 3)
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id),
                                           [f"old key {i}" for i in range(3)]),
                           what="old-key messages on b")
            old = (await ca.get("/.well-known/scaiwave/server",
                                headers={"Host": "a.test"})).json()["key_id"]
            # signed with the old key, delivered only after the rotation
            assert b.stop() == 0
            await send_many(ca, tokens["alice"], room_id, "queued", 2)
            out = a.cli("admin", "federation", "key", "rotate", "--json")
            new = json.loads(out.stdout)["key_id"]
            assert new != old

            async def descriptor_rotated() -> bool:
                d = (await ca.get("/.well-known/scaiwave/server",
                                  headers={"Host": "a.test"})).json()
                return d["key_id"] == new and [k["key_id"] for k in d["old_keys"]] == [old]

            await wait_for(descriptor_rotated, what="a serving the new key")
            b.start()
            await ca.post("/v1/admin/federation/peers/b.test/retry",
                          headers=bearer(tokens["admin_a"]))
            # new events use the new key; b picks it up without an admin
            await send_many(ca, tokens["alice"], room_id, "new key", 2)
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id),
                                           [f"old key {i}" for i in range(3)]
                                           + [f"queued {i}" for i in range(2)]
                                           + [f"new key {i}" for i in range(2)]),
                           timeout=30, what="new-key messages on b")
            r = await ca.get(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["alice"]))
            assert r.status_code == 200
            # history signed with the old key still verifies (backfill re-checks it)
            r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                              headers=bearer(tokens["admin_b"]))
            assert r.status_code == 200, r.text
            assert r.json()["refused"] == 0
            audit = await ca.get("/v1/admin/audit", params={"action": "federation.key"},
                                 headers=bearer(tokens["admin_a"]))
            actions = [row["action"] for row in audit.json()["data"]]
            assert "federation.key.rotate" in actions
    finally:
        a.kill()
        b.kill()


async def _equals(value: Any, expected: Any) -> bool:
    got = await value
    if len(got) > len(expected):
        raise AssertionError(f"duplicates or extra events: {len(got)} > {len(expected)}")
    return bool(got == expected)
