"""Bad federation traffic is refused with the spec's code, logged, audited, stored nowhere.

The test plays a misbehaving peer: it holds a.test's real signing key (read
from a.test's data directory) and talks to b.test's federation endpoints
directly; ``c.test`` is a hostile peer (tests/hostile.py) that speaks only
protocol v2.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import signedjson.key
import signedjson.sign

from swfed.core.canonical import encode_canonical_json
from swfed.core.signing import (
    KeyPair,
    generate_keypair,
    keypair_from_seed,
    sign_json,
    sign_request,
)
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for
from tests.hostile import HostilePeer

SEND = "/_scaiwave/federation/v1/send"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[TlsNet, ServerProcess, ServerProcess, ServerProcess]]:
    net, (a, b, c) = federated_servers(tmp_path_factory.mktemp("ref"),
                                       ["a.test", "b.test", "c.test"])
    with running(a, b):
        yield net, a, b, c  # c is never started: the fake peer takes its port


@pytest.fixture(scope="module")
def tokens(setup: tuple[TlsNet, ServerProcess, ServerProcess, ServerProcess]
           ) -> dict[str, str]:
    _, a, b, _ = setup
    return {"ra": a.create_user("root", admin=True), "alice": a.create_user("alice"),
            "rb": b.create_user("root", admin=True), "bob": b.create_user("bob")}


@pytest.fixture
async def clients(setup: tuple[TlsNet, ServerProcess, ServerProcess, ServerProcess]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    net, a, b, _ = setup
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        yield ca, cb


def a_key(a: ServerProcess) -> KeyPair:
    conn = a.db()
    key_id, seed = conn.execute("SELECT key_id, seed FROM signing_keys WHERE retired_at IS NULL"
                                ).fetchone()
    conn.close()
    return keypair_from_seed(seed, key_id)


async def shared_room(ca: httpx.AsyncClient, cb: httpx.AsyncClient,
                      tokens: dict[str, str]) -> str:
    for client, admin in ((ca, tokens["ra"]), (cb, tokens["rb"])):
        await client.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                         headers=bearer(admin))
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                      headers=bearer(tokens["alice"]))
    room_id = str(r.json()["room_id"])

    async def invite() -> str | None:
        r = await cb.get("/v1/me/notifications", headers=bearer(tokens["bob"]))
        ids = [n["invite_id"] for n in r.json()["data"] if n.get("room_id") == room_id]
        return ids[0] if ids else None

    iid = await wait_for(invite, what="invite")
    await cb.post(f"/v1/me/invites/{iid}/accept", headers=bearer(tokens["bob"]))

    async def settled() -> bool:
        r = await cb.get(f"/v1/rooms/{room_id}/members", headers=bearer(tokens["bob"]))
        return r.status_code == 200 and len(r.json()["data"]) == 2

    await wait_for(settled, what="room settled on b")
    return room_id


def event(room_id: str, body: str, keypair: KeyPair) -> dict[str, Any]:
    ev = {"event_id": str(uuid.uuid4()), "room_id": room_id, "type": "message",
          "sender": "@alice:a.test", "origin": "a.test", "origin_ts": int(time.time() * 1000),
          "content": {"body": body}}
    return sign_json(ev, "a.test", keypair)


async def post_send(b: ServerProcess, net: TlsNet, events: list[dict[str, Any]],
                    keypair: KeyPair | None, *, ts_offset_ms: int = 0,
                    origin: str = "a.test") -> httpx.Response:
    body = {"origin": origin, "txn_id": str(uuid.uuid4()), "events": events}
    headers = {"Host": "b.test", "Content-Type": "application/json"}
    if keypair is not None:
        headers["Authorization"] = sign_request(
            method="POST", uri=SEND, origin=origin, destination="b.test",
            ts_ms=int(time.time() * 1000) + ts_offset_ms, content=body, keypair=keypair)
    async with httpx.AsyncClient(verify=net.ssl_context(), timeout=20) as c:
        return await c.post(b.url + SEND, content=encode_canonical_json(body), headers=headers)


async def stored_bodies(cb: httpx.AsyncClient, tokens: dict[str, str], room_id: str) -> set[str]:
    r = await cb.get(f"/v1/rooms/{room_id}/messages", params={"limit": 200},
                     headers=bearer(tokens["bob"]))
    return {e["content"].get("body") for e in r.json()["data"]}


async def test_bad_events_and_requests(setup: Any, tokens: dict[str, str],
                                       clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
                                       ) -> None:
    net, a, b, _ = setup
    ca, cb = clients
    room_id = await shared_room(ca, cb, tokens)
    key = a_key(a)

    # a good event through the same path is stored: the harness itself is sound
    good = event(room_id, "genuine", key)
    r = await post_send(b, net, [{**good, "unsigned": {"seq": 1000}}], key)  # as relayed
    assert r.status_code == 200 and r.json()["results"][good["event_id"]] == {}

    tampered = event(room_id, "original", key)
    tampered["content"]["body"] = "tampered"
    wrong_key = event(room_id, "wrong key", KeyPair(key.key_id, generate_keypair().seed))
    r = await post_send(b, net, [tampered, wrong_key], key)
    assert r.status_code == 200
    results = r.json()["results"]
    for ev in (tampered, wrong_key):
        assert results[ev["event_id"]]["error"]["code"] == "SW_FED_SIGNATURE_MISMATCH"

    # whole requests: unsigned, two minutes old, signed by a stranger's key
    r = await post_send(b, net, [event(room_id, "unsigned request", key)], None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "SW_FED_SIGNATURE_MISMATCH"
    r = await post_send(b, net, [event(room_id, "stale request", key)], key,
                        ts_offset_ms=-120_000)
    assert r.status_code == 401 and r.json()["error"]["code"] == "SW_FED_SIGNATURE_MISMATCH"
    assert "clock skew" in r.json()["error"]["message"]
    r = await post_send(b, net, [event(room_id, "forged request", key)],
                        KeyPair(key.key_id, generate_keypair().seed))
    assert r.status_code == 401

    assert await stored_bodies(cb, tokens, room_id) >= {"genuine"}
    assert not await stored_bodies(cb, tokens, room_id) & {
        "tampered", "original", "wrong key", "unsigned request", "stale request",
        "forged request"}

    # logged under the spec's name, with tenant, peer and reason
    fails = b.logs("federation.signature_verify_failed")
    assert len(fails) >= 5
    assert all(f["tenant"] == "b.test" and f["reason"] == "SW_FED_SIGNATURE_MISMATCH"
               for f in fails)
    # and audited / listed as rejected
    r = await cb.get("/v1/admin/federation/rejected", params={"peer": "a.test"},
                     headers=bearer(tokens["rb"]))
    reasons = [row["reason"] for row in r.json()["data"]]
    assert reasons.count("SW_FED_SIGNATURE_MISMATCH") >= 4
    ids = {row["event_id"] for row in r.json()["data"]}
    assert {tampered["event_id"], wrong_key["event_id"]} <= ids
    r = await cb.get("/v1/admin/audit", params={"action": "federation."},
                     headers=bearer(tokens["rb"]))
    outcomes = {(row["action"], row["outcome"]) for row in r.json()["data"]}
    assert ("federation.event.rejected", "refused") in outcomes
    assert ("federation.event.accepted", "ok") in outcomes

    # peer not allowed
    r = await cb.put("/v1/admin/federation/policy",
                     json={"default_mode": "invite_only", "allowed_peers": []},
                     headers=bearer(tokens["rb"]))
    assert r.status_code == 200
    try:
        r = await post_send(b, net, [event(room_id, "not allowed", key)], key)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "SW_FED_PEER_UNKNOWN"
        # the log is read from the server's stderr by a thread: wait for the line
        await wait_for(lambda: any(
            line["peer"] == "a.test" and line["reason"] == "SW_FED_PEER_UNKNOWN"
            for line in b.logs("federation.policy_rejected")), what="the refusal's log line")
        r = await cb.put("/v1/admin/federation/policy", json={"denied_peers": ["a.test"],
                                                               "default_mode": "open"},
                         headers=bearer(tokens["rb"]))
        r = await post_send(b, net, [event(room_id, "denied", key)], key)
        assert r.json()["error"]["code"] == "SW_FED_PEER_DENIED"
        r = await cb.put("/v1/admin/federation/policy", json={"default_mode": "closed",
                                                               "denied_peers": []},
                         headers=bearer(tokens["rb"]))
        r = await post_send(b, net, [event(room_id, "closed", key)], key)
        assert r.json()["error"]["code"] == "SW_FED_CLOSED"
    finally:
        await cb.put("/v1/admin/federation/policy", json={"default_mode": "open",
                                                           "denied_peers": []},
                     headers=bearer(tokens["rb"]))
    assert not await stored_bodies(cb, tokens, room_id) & {"not allowed", "denied", "closed"}


async def test_descriptor_verifies_with_signedjson(setup: Any) -> None:
    """Another implementation of signing JSON verifies what we publish."""
    net, a, _, _ = setup
    async with httpx.AsyncClient(verify=net.ssl_context()) as c:
        desc = (await c.get(a.url + "/.well-known/scaiwave/server",
                            headers={"Host": "a.test"})).json()
    raw = desc["public_key"].removeprefix("ed25519:")
    verify_key = signedjson.key.decode_verify_key_base64("ed25519", desc["key_id"][8:], raw)
    signedjson.sign.verify_signed_json(desc, "a.test", verify_key)


def v2_only(keypair: KeyPair) -> bytes:
    """A valid, signed descriptor of c.test that speaks only protocol v2."""
    return json.dumps(sign_json({
        "server_name": "c.test", "public_key": "ed25519:" + keypair.public_key_b64,
        "key_id": keypair.key_id, "protocol_versions": ["v2"], "endpoints": {},
        "old_keys": [], "valid_until": int(time.time() * 1000) + 3_600_000,
    }, "c.test", keypair)).encode()


async def test_no_common_protocol_version(setup: Any, tokens: dict[str, str],
                                          clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
                                          ) -> None:
    net, a, b, c = setup
    ca, cb = clients
    keypair = generate_keypair()
    peer = HostilePeer(net, "c.test", c.port, keypair)
    peer.descriptor = lambda: v2_only(keypair)
    for client, admin in ((ca, tokens["ra"]), (cb, tokens["rb"])):
        await client.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                         headers=bearer(admin))
    async with peer.serving():
        # inbound: c.test's request is refused once b sees c's versions
        r = await post_send(b, net, [], keypair, origin="c.test")
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "SW_FED_PROTOCOL_VERSION"
        # outbound: a refuses to open a DM with someone on c.test
        r = await ca.post("/v1/me/federated-dms", json={"fqid": "@carl:c.test"},
                          headers=bearer(tokens["alice"]))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "SW_FED_PROTOCOL_VERSION"
    discovery = b.logs("federation.peer_discovery_failed")
    assert discovery and discovery[-1]["reason"] == "SW_FED_PROTOCOL_VERSION"
    assert discovery[-1]["peer"] == "c.test"
