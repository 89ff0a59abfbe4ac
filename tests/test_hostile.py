"""Hostile peers: nothing a peer sends can write into rooms, squat ids, spin or block a queue.

Three tenants on two processes (tests/world.py) and ``evil.test``, a real TLS
server with its own key that answers whatever the test scripts
(tests/hostile.py). Every tenant's policy is ``open``, so evil.test is let
in as far as policy goes: what stops it is the room protocol.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio

from swfed.core.canonical import encode_canonical_json
from swfed.core.signing import generate_keypair, sign_request
from tests.conftest import peer_row
from tests.harness import free_port, wait_for
from tests.hostile import HostilePeer, ok_send
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
EVIL_KEY = generate_keypair()  # one key for the module: our servers cache it
FED = "/_scaiwave/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # each hostile name is its own server to us (keys cached per name)
    names = ("evil.test", "expiring.test", "dup.test", "many.test", "drip.test")
    with running_world(tmp_path_factory.mktemp("hostile"),
                       dict.fromkeys(names, EVIL_PORT)) as w:
        yield w


@pytest.fixture
async def evil(world: World) -> AsyncIterator[HostilePeer]:
    peer = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    async with peer.serving():
        yield peer


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob"),
               "dave": Person(world, clients, "b.test", "dave"),
               "root_a": Person(world, clients, "a.test", "root")}


async def shared_room(alice: Person, *members: Person) -> str:
    room_id = await alice.new_room("target")
    for member in members:
        await member.accept(room_id, await alice.invite(room_id, member))
    return room_id


def results(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return dict(r.json()["results"])


def code(result: dict[str, Any]) -> str:
    return str(result["error"]["code"])


async def test_a_stranger_cannot_write_into_a_room(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await shared_room(alice, bob)
    join = evil.event(room_id, "member", {"membership": "join"})
    hello = evil.event(room_id, "message", {"body": "pwned", "mentions": [bob.fqid]})
    # to a member server: only the host writes into its room
    got = results(await evil.send(world.b, [join, hello]))
    assert code(got[join["event_id"]]) == code(got[hello["event_id"]]) == "SW_FED_NOT_HOST"
    # to the host: no invite, no membership
    got = results(await evil.send(world.a, [join, hello]))
    assert code(got[join["event_id"]]) == "SW_FED_NOT_INVITED"
    assert code(got[hello["event_id"]]) == "SW_FED_NOT_MEMBER"
    for person in (alice, bob):
        assert "@mallory:evil.test" not in await person.members(room_id)
        assert "pwned" not in await person.bodies(room_id)
    assert not [n for n in await bob.notifications() if n["type"] == "mention"
                and n["room_id"] == room_id]
    # and a stranger reads nothing of it
    for path in (f"/rooms/{room_id}/members", f"/rooms/{room_id}/backfill?limit=10",
                 f"/rooms/{room_id}/backfill?after=0"):
        r = await evil.request(world.a, "GET", FED + path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_NOT_MEMBER"


async def test_an_invited_server_does_not_read_history(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    alice = people["alice"]
    room_id = await shared_room(alice, people["bob"])
    await alice.post(room_id, "for members only")
    await alice.invite(room_id, Person.elsewhere("@mallory:evil.test"))
    await wait_for(lambda: evil.count(FED + "/send") > 0, what="the invite at evil.test")
    for path in (f"/rooms/{room_id}/members", f"/rooms/{room_id}/backfill?limit=10"):
        r = await evil.request(world.a, "GET", FED + path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_NOT_MEMBER"


async def test_ids_cannot_be_squatted(world: World, evil: HostilePeer,
                                      people: dict[str, Person]) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    room_id = await shared_room(alice, dave)
    real = await alice.post(room_id, "the real one")
    real_invite = await alice.invite(room_id, bob)
    await bob.invite_to(room_id, real_invite)

    # evil.test's own room, and an invite into it reusing the real invite's id: invites
    # are keyed by room, so it is its own invite in its own room and displaces nothing
    evil_room = "!evilevilevil:evil.test"
    squat = evil.event(evil_room, "invite", {
        "invitee": bob.fqid, "invite_id": real_invite, "room_name": "target",
        "room_type": "standard", "members": ["@mallory:evil.test"]})
    assert results(await evil.send(world.b, [{**squat, "unsigned": {"seq": 1}}]))[
        squat["event_id"]] == {}
    r = await bob.call("POST", f"/v1/me/invites/{real_invite}/accept")
    assert r.status_code == 409 and r.json()["error"]["code"] == "SW_INVITE_AMBIGUOUS", r.text
    await bob.ok("POST", f"/v1/me/invites/{real_invite}/accept?room_id={room_id}")
    assert (await bob.ok("GET", f"/v1/rooms/{room_id}"))["host"] == "a.test"

    # a fair invite to dave: evil.test's room exists on b.test; an event there that
    # reuses a real event's id is its own event in its own room, not the real one
    fair = evil.event(evil_room, "invite", {
        "invitee": dave.fqid, "invite_id": "8c0e7c1e-0000-4000-8000-000000000001",
        "room_name": "spam", "room_type": "standard", "members": ["@mallory:evil.test"]})
    assert results(await evil.send(world.b, [{**fair, "unsigned": {"seq": 2}}]))[
        fair["event_id"]] == {}
    twin = evil.event(evil_room, "message", {"body": "twin"}, event_id=real)
    assert results(await evil.send(world.b, [{**twin, "unsigned": {"seq": 3}}]))[
        twin["event_id"]] == {}
    other = evil.event(evil_room, "message", {"body": "other twin"}, event_id=real)
    assert code(results(await evil.send(world.b, [{**other, "unsigned": {"seq": 4}}]))[
        real]) == "SW_FED_EVENT_CONFLICT"
    mine = await dave.event(room_id, real)
    assert mine is not None and mine["content"]["body"] == "the real one"


async def test_a_peer_answering_nonsense_neither_spins_nor_stops_our_sender(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    alice, root = people["alice"], people["root_a"]
    evil.answer(FED + "/profile", lambda m, p, b: (200, json.dumps(
        {"local_id": "mallory", "fqid": "@mallory:evil.test"}).encode()))
    bad_answers = [
        b'{"results": {}}',  # settles nothing
        b"[" * 200_000 + b"]" * 200_000,  # nested past any parser's stack
        b'{"results": {"x": {"seq": 99999999999999999999999}}}',
        b"not json",
    ]
    current = {"body": bad_answers[0]}
    evil.answer(FED + "/send", lambda m, p, b: (200, current["body"]))
    await alice.ok("POST", "/v1/me/federated-dms", {"fqid": "@mallory:evil.test"})
    for body in bad_answers:
        current["body"] = body
        before = evil.count(FED + "/send")
        await root.ok("POST", "/v1/admin/federation/peers/evil.test/retry")
        await wait_for(lambda b=before: evil.count(FED + "/send") > b,  # type: ignore[misc]
                       what="one more attempt")
        await wait_for(lambda: _failed(root), what="the attempt to count as failed")
    # four answers, four retries: a few attempts, not a spin (it made thousands)
    assert evil.count(FED + "/send") <= 2 * len(bad_answers) + 2
    peer = await _peer(root, "evil.test")
    assert peer["queue_depth"] == 1 and peer["next_retry_at"] is not None
    r = await people["alice"].http.get("/healthz")
    assert r.status_code == 200, r.text
    # the queue still works: an honest answer delivers the invite
    evil.answers.pop(0)
    await root.ok("POST", "/v1/admin/federation/peers/evil.test/retry")
    await wait_for(lambda: _queue_empty(root), what="the invite delivered")
    assert not [line for line in world.a.log_lines if "Traceback" in line
                and "federation.send.internal_error" not in line]


async def _peer(root: Person, name: str) -> dict[str, Any]:
    return await peer_row(root.http, root.token, name)


async def _failed(root: Person) -> bool:
    peer = await _peer(root, "evil.test")
    return bool(peer["last_error"]) and peer["failures"] >= 1


async def _queue_empty(root: Person) -> bool:
    return (await _peer(root, "evil.test"))["queue_depth"] == 0


async def test_big_events_never_block_a_queue(world: World, evil: HostilePeer,
                                              people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await shared_room(alice, bob)
    # too big to federate: refused here, before it is stored
    r = await alice.call("POST", f"/v1/rooms/{room_id}/messages", {"body": "😈" * 20_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "SW_EVENT_TOO_LARGE"
    # and by a receiver: evil.test's oversized event
    big = evil.event(room_id, "message", {"body": "x" * 30_000, "pad": "y" * 40_000})
    assert code(results(await evil.send(world.a, [big]))[big["event_id"]]) == \
        "SW_FED_BAD_EVENT"
    # 40 × 30 KB queued while b.test is down: all arrive after it is back
    world.b.kill()
    try:
        for i in range(40):
            await alice.post(room_id, f"{i:02d} " + "z" * 30_000)
    finally:
        world.b.start()
    await people["root_a"].ok("POST", "/v1/admin/federation/peers/b.test/retry")

    async def all_there() -> bool:
        return len([b for b in await bob.bodies(room_id) if b.endswith("z" * 100)]) == 40

    await wait_for(all_there, timeout=60, what="40 big messages at b.test")


async def test_a_signed_request_is_not_taken_twice(world: World, evil: HostilePeer,
                                                   people: dict[str, Person]) -> None:
    room_id = await shared_room(people["alice"])
    await people["alice"].invite(room_id, Person.elsewhere("@mallory:evil.test"))
    join = evil.event(room_id, "member", {"membership": "join", "display_name": "m"})
    path = f"{FED}/rooms/{room_id}/membership"
    body = {"event": join}
    headers = {"Host": "a.test", "Content-Type": "application/json",
               "Authorization": sign_request(method="POST", uri=path, origin="evil.test",
                                             destination="a.test",
                                             ts_ms=int(time.time() * 1000), content=body,
                                             keypair=evil.keypair)}
    async with httpx.AsyncClient(verify=world.net.ssl_context(), timeout=30) as c:
        first = await c.post(world.a.url + path, content=encode_canonical_json(body),
                             headers=headers)
        again = await c.post(world.a.url + path, content=encode_canonical_json(body),
                             headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 409 and again.json()["error"]["code"] == "SW_FED_REPLAY"
    assert (await people["alice"].members(room_id)).get("@mallory:evil.test") == "join"


async def test_a_descriptor_is_trusted_until_its_valid_until(
        world: World, people: dict[str, Person]) -> None:
    """evil.test drops a key from its descriptor: once the cached one expires, it is out."""
    from swfed.core.signing import sign_json

    old, new = generate_keypair(), generate_keypair()
    peer = HostilePeer(world.net, "expiring.test", EVIL_PORT, old)
    valid_for = {"ms": 1500}

    def descriptor(current: Any) -> bytes:
        return json.dumps(sign_json({
            "server_name": "expiring.test", "public_key": "ed25519:" + current.public_key_b64,
            "key_id": current.key_id, "protocol_versions": ["v1"], "endpoints": {},
            "old_keys": [], "valid_until": int(time.time() * 1000) + valid_for["ms"]},
            "expiring.test", current)).encode()

    peer.descriptor = lambda: descriptor(old)
    async with peer.serving():
        r = await peer.request(world.a, "GET", FED + "/probe")
        assert r.json()["result"]["ok"] is True  # a.test fetched and cached the old key
        peer.descriptor = lambda: descriptor(new)  # the old key is gone from it

        async def refused() -> bool:
            r = await peer.request(world.a, "GET", FED + "/probe")
            return r.json()["result"].get("code") == "SW_FED_SIGNATURE_MISMATCH"

        await wait_for(refused, what="the dropped key refused once the descriptor expired")


async def test_no_key_is_fetched_for_events_that_may_not_come(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    room_id = await shared_room(people["alice"], people["bob"])
    claims = []
    for i in range(20):
        event = evil.event(room_id, "message", {"body": "x"}, sender=f"@x:o{i}.test")
        claims.append({**event, "origin": f"o{i}.test"})
    got = results(await evil.send(world.b, claims))
    assert {code(r) for r in got.values()} == {"SW_FED_NOT_HOST"}
    fetched = {line.get("peer") for line in world.b.logs("federation.peer_discovery_failed")}
    assert not {f"o{i}.test" for i in range(20)} & fetched


async def test_descriptors_that_would_hurt_are_refused(world: World,
                                                       people: dict[str, Person]) -> None:
    from swfed.core.signing import sign_json

    key = generate_keypair()

    def descriptor(name: str, old_keys: list[dict[str, Any]]) -> bytes:
        return json.dumps(sign_json({
            "server_name": name, "public_key": "ed25519:" + key.public_key_b64,
            "key_id": key.key_id, "protocol_versions": ["v1"], "endpoints": {},
            "old_keys": old_keys, "valid_until": int(time.time() * 1000) + 60_000},
            name, key)).encode()

    twice = [{"key_id": key.key_id, "public_key": "ed25519:" + key.public_key_b64,
              "retired_at": 1, "expires_at": 2}]
    many = [{"key_id": k.key_id, "public_key": "ed25519:" + k.public_key_b64,
             "retired_at": 1, "expires_at": 2}
            for k in (generate_keypair() for _ in range(3000))]
    for name, old_keys in (("dup.test", twice), ("many.test", many)):
        peer = HostilePeer(world.net, name, EVIL_PORT, key)
        peer.descriptor = lambda n=name, o=old_keys: descriptor(n, o)  # type: ignore[misc]
        async with peer.serving():
            r = await peer.request(world.a, "GET", FED + "/probe")
            assert r.json()["result"]["code"] == "SW_FED_BAD_DESCRIPTOR", r.text
    assert (await people["alice"].http.get("/healthz")).status_code == 200
    assert (await people["alice"].call("GET", "/v1/me")).status_code == 200


async def test_a_dripping_peer_holds_a_request_for_one_deadline_at_most(
        world: World, people: dict[str, Person]) -> None:
    peer = HostilePeer(world.net, "drip.test", EVIL_PORT)
    peer.drip_seconds = 1.0  # its descriptor would take ten minutes
    async with peer.serving():
        r = await peer.request(world.a, "GET", FED + "/probe")
    assert r.json()["result"]["code"] == "SW_FED_PEER_TIMEOUT", r.text
    # what a.test saw of the network stays in its log: no scan oracle through it
    assert "127.0.0.1" not in r.json()["result"]["message"] and str(EVIL_PORT) not in r.text
    assert (await people["alice"].call("GET", "/v1/me")).status_code == 200


async def evil_invites(world: World, evil: HostilePeer, member: Person, name: str,
                       n: int) -> str:
    """evil.test hosts room ``!{name}room:evil.test`` and invites ``member`` (seq 2)."""
    room_id = f"!{name}room:evil.test"
    invite = evil.event(room_id, "invite", {
        "invitee": member.fqid, "invite_id": f"8c0e7c1e-0000-4000-8000-{n:012d}",
        "room_name": name, "room_type": "standard", "members": ["@mallory:evil.test"]})
    assert results(await evil.send(world.b, [{**invite, "unsigned": {"seq": 2}}]))[
        invite["event_id"]] == {}
    return room_id


async def test_a_hosts_relays_are_bounded(world: World, evil: HostilePeer,
                                          people: dict[str, Person]) -> None:
    """evil.test hosts a room with dave in it; what it relays is checked field by field."""
    dave = people["dave"]
    room_id = await evil_invites(world, evil, dave, "bounded", 2)
    flood = evil.event(room_id, "message", {"body": "hi", "mentions": [dave.fqid] * 2
                                            + [f"@u{i}:b.test" for i in range(60)]})
    long_name = evil.event(room_id, "member", {"membership": "join",
                                               "display_name": "n" * 500_000})
    no_seq = evil.event(room_id, "message", {"body": "where do I go?"})
    huge_seq = evil.event(room_id, "message", {"body": "far away"})
    got = results(await evil.send(world.b, [
        {**flood, "unsigned": {"seq": 3}}, {**long_name, "unsigned": {"seq": 4}}, no_seq,
        {**huge_seq, "unsigned": {"seq": 2**41}}]))
    assert {code(r) for r in got.values()} == {"SW_FED_BAD_EVENT"}
    assert not [n for n in await dave.notifications() if n["type"] == "mention"]


async def test_a_queue_behind_sends_two_batches_at_once_and_a_failed_one_loses_nothing(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """Behind, a queue has the next /send in flight before the answer to the one before
    (federation.sender); never more than two. When the first fails, the second's rows stay
    queued too, and after the backoff every event arrives."""
    alice, root = people["alice"], people["root_a"]
    room_id = await shared_room(alice)
    await alice.invite(room_id, Person.elsewhere("@mallory:evil.test"))
    join = evil.event(room_id, "member", {"membership": "join", "display_name": "m"})
    r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/membership",
                           {"event": join})
    assert r.status_code == 200, r.text
    seen = {"up": False, "in_flight": 0, "most": 0, "failed": 0}
    stored: set[str] = set()
    second = trio.Event()

    async def send(method: str, path: str, body: Any) -> tuple[int, bytes]:
        if not seen["up"]:
            return 503, b'{"error": {"code": "SW_UNAVAILABLE", "message": "down"}}'
        seen["in_flight"] += 1
        seen["most"] = max(seen["most"], seen["in_flight"])
        try:
            if not seen["failed"] and seen["in_flight"] == 1:
                # the first batch: held until the next one is in flight too, then failed
                with trio.move_on_after(20):
                    await second.wait()
                seen["failed"] += 1
                return 500, b'{"error": {"code": "SW_INTERNAL", "message": "boom"}}'
            second.set()
            stored.update(e["event_id"] for e in body["events"])
            return ok_send(method, path, body)
        finally:
            seen["in_flight"] -= 1

    evil.answer(FED + "/send", send)
    posted = [await alice.post(room_id, f"m{i}") for i in range(250)]
    await wait_for(lambda: _failed(root), what="the queue to back off while evil is down")
    seen["up"] = True
    await root.ok("POST", "/v1/admin/federation/peers/evil.test/retry")
    await wait_for(lambda: _failed_after_up(root, seen), what="the held batch to fail")
    await root.ok("POST", "/v1/admin/federation/peers/evil.test/retry")
    await wait_for(lambda: _queue_empty(root), timeout=60, what="every event delivered")
    assert set(posted) <= stored
    assert seen["most"] == 2 and seen["failed"] == 1


async def _failed_after_up(root: Person, seen: dict[str, int]) -> bool:
    return bool(seen["failed"]) and await _failed(root)


async def test_a_gap_the_hosts_next_send_closes_is_not_fetched(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """A host's queue that is behind has two /send in flight, which may arrive in either
    order: the copy sees a gap for a moment. Repair gives it a moment to close
    (federation.repair.GAP_SECONDS) and fetches only what is still missing then."""
    dave = people["dave"]
    room_id = await evil_invites(world, evil, dave, "gaps", 3)
    members = [{"fqid": "@mallory:evil.test", "membership": "join"},
               {"fqid": dave.fqid, "membership": "join"}]
    evil.answer(f"{FED}/rooms/{room_id}/membership", lambda method, path, body: (
        200, json.dumps({"seq": 3, "members": members, "events": []}).encode()))
    await dave.accept(room_id)
    m = {seq: {**evil.event(room_id, "message", {"body": f"m{seq}"}), "unsigned": {"seq": seq}}
         for seq in (4, 5, 6, 7)}
    def backfill(method: str, path: str, body: Any) -> tuple[int, bytes]:
        return 200, json.dumps({"events": [m[6], m[7]], "last_seq": 7}).encode()

    evil.answer(f"{FED}/rooms/{room_id}/backfill", backfill)
    # 5 arrives before 4, as the second of two /send may: a gap, closed at once
    for seq in (5, 4):
        assert results(await evil.send(world.b, [m[seq]])) == {m[seq]["event_id"]: {}}
    # 7 without 6 (a /send that failed, say): a gap that stays, fetched
    assert results(await evil.send(world.b, [m[7]])) == {m[7]["event_id"]: {}}

    async def whole() -> bool:
        return await dave.bodies(room_id) == ["m4", "m5", "m6", "m7"]

    await wait_for(whole, what="the copy to fetch m6")
    asked = [path for _, path, _ in evil.requests if "/backfill" in path]
    assert [path.partition("after=")[2] for path in asked] == ["5"], asked
