"""A server's keys come only from that server (issue 18, finding 1).

evil.test hosts a room bob@b.test is in (tests/hostile.HostedRoom) and tries
to speak as a third server: x.test, whose real key b.test learnt from x.test
itself before x.test went down, and ghost.test, a name b.test cannot reach at
all. evil.test relays events "from" them signed with a key of its own and
answers ``descriptors/{name}`` with a self-signed descriptor carrying that
key. Nothing of it may be believed: b.test keeps only keys each server
published itself, such an event waits (it is never shown), and requests
signed with the planted key are refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from swfed.core.descriptor import build_descriptor
from swfed.core.signing import KeyPair, generate_keypair, sign_json
from swfed.federation.service import REFETCH_MIN_SECONDS
from tests.harness import free_port, wait_for
from tests.hostile import HostedRoom, HostilePeer
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
X_PORT = free_port()
DEAD_PORT = free_port()  # nothing listens here
BLOAT_PORT = free_port()
ROGUE_PORT = free_port()
NOWHERE = [f"n{i}.test" for i in range(5)]
EVIL_KEY = generate_keypair()  # one key for the module: b.test caches it
FED = "/_scaiwave/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("trustkeys"), {
            "evil.test": EVIL_PORT, "x.test": X_PORT, "ghost.test": DEAD_PORT,
            "bloat.test": BLOAT_PORT, "rogue.test:8448": ROGUE_PORT,
            **dict.fromkeys(NOWHERE, DEAD_PORT)}) as w:
        yield w


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"bob": Person(world, clients, "b.test", "bob"),
               "carol": Person(world, clients, "b.test", "carol")}


def as_server(name: str, keypair: KeyPair, room_id: str, type_: str,
              content: dict[str, Any], sender: str) -> dict[str, Any]:
    """An event claiming to come from ``name``, signed with ``keypair``."""
    return sign_json({"event_id": str(uuid.uuid4()), "room_id": room_id, "type": type_,
                      "sender": sender, "origin": name, "origin_ts": int(time.time() * 1000),
                      "content": content}, name, keypair)


def plant(evil: HostilePeer, name: str, keypair: KeyPair) -> None:
    """evil.test answers descriptors/{name} with a self-signed descriptor of its key."""
    desc = build_descriptor(name, keypair, [], int(time.time() * 1000))
    evil.answer(f"{FED}/descriptors/{name}", lambda m, p, b: (
        200, json.dumps({"server_name": name, "descriptor": desc}).encode()))


async def joined_room(world: World, evil: HostilePeer, name: str,
                      member: Person) -> HostedRoom:
    """evil.test hosts room ``name``; ``member`` of b.test is invited and has joined."""
    room = HostedRoom(evil, name)
    room.invite(member.fqid)
    await room.deliver(world.b)
    await member.accept(room.room_id)
    return room


async def test_the_hosted_room_helper_behaves_as_a_host(
        world: World, people: dict[str, Person]) -> None:
    """tests/hostile.HostedRoom: an invite, a join through ``/membership``, relayed posts."""
    bob = people["bob"]
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    async with evil.serving():
        room = HostedRoom(evil, "helper")
        room.invite(bob.fqid)
        assert list((await room.deliver(world.b)).values()) == [{}]
        await bob.accept(room.room_id)
        assert room.members[bob.fqid] == "join"
        room.post("one")
        room.post("two")
        await room.deliver(world.b)

        async def both() -> bool:
            return await bob.bodies(room.room_id) == ["one", "two"]

        await wait_for(both, what="the relayed posts at b.test")


async def test_a_host_cannot_plant_a_key_for_a_server_we_know(
        world: World, people: dict[str, Person]) -> None:
    """x.test's real key was learnt from x.test; while it is down, evil.test plants its own."""
    bob = people["bob"]
    x_key, planted = generate_keypair(), generate_keypair()
    x = HostilePeer(world.net, "x.test", X_PORT, x_key)
    async with x.serving():
        # x.test contacts b.test: b.test fetches x.test's descriptor from x.test itself
        r = await x.request(world.b, "GET", f"{FED}/probe")
        assert r.status_code == 200, r.text
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    plant(evil, "x.test", planted)
    async with evil.serving():
        room = await joined_room(world, evil, "plantknown", bob)
        forged = room.add(as_server("x.test", planted, room.room_id, "message",
                                    {"body": "forged xavier"}, "@xavier:x.test"))
        room.post("after the forgery")
        # evil.test retries as a host's queue would, past b.test's refetch interval
        for _ in range(7):
            got = await room.deliver(world.b, room.events[forged["unsigned"]["seq"] - 1:])
            # never stored: refused (x.test's descriptor, fetched moments ago, lacks the
            # key) or waiting (transient) while x.test can't be asked again
            assert got[forged["event_id"]]["error"]["code"] in (
                "SW_FED_SIGNATURE_MISMATCH", "SW_FED_PEER_UNREACHABLE"), got
            await trio.sleep(REFETCH_MIN_SECONDS / 4)
        assert "forged xavier" not in await bob.bodies(room.room_id)
        # a request signed as x.test with the planted key opens no door
        fake_x = HostilePeer(world.net, "x.test", X_PORT, planted)
        r = await fake_x.request(world.b, "GET", f"{FED}/probe")
        assert r.json()["result"]["ok"] is False, r.text
        # x.test is down: its key can't be refetched; never is the planted one taken
        assert r.json()["result"]["code"] in ("SW_FED_SIGNATURE_MISMATCH",
                                              "SW_FED_PEER_UNREACHABLE"), r.text
        # b.test never learnt the planted key, and serves no descriptor but x.test's own
        r = await evil.request(world.b, "GET", f"{FED}/descriptors/x.test")
        if r.status_code == 200:
            assert r.json()["descriptor"]["public_key"].endswith(
                x_key.public_key_b64), r.text
        # x.test back: its real key still verifies it; the forgery, sent again, is
        # refused for good (x.test's own descriptor does not list the planted key)
        async with x.serving():
            r = await x.request(world.b, "GET", f"{FED}/probe")
            assert r.json()["result"]["ok"] is True, r.text

            async def refused_for_good() -> bool:
                got = await room.deliver(world.b, [forged])
                error = got[forged["event_id"]].get("error", {})
                return error.get("code") == "SW_FED_SIGNATURE_MISMATCH" and not error.get(
                    "transient")

            await wait_for(refused_for_good, what="the forgery refused once x.test answers")
    assert "forged xavier" not in await bob.bodies(room.room_id)
    assert "after the forgery" in await bob.bodies(room.room_id)


async def test_a_host_cannot_plant_a_key_for_a_name_we_cannot_reach(
        world: World, people: dict[str, Person]) -> None:
    """ghost.test never answered b.test: a copy of 'its' descriptor from the host proves
    nothing; the event waits, and b.test stores no key for ghost.test."""
    carol = people["carol"]
    planted = generate_keypair()
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    plant(evil, "ghost.test", planted)
    async with evil.serving():
        room = await joined_room(world, evil, "plantghost", carol)
        forged = room.add(as_server("ghost.test", planted, room.room_id, "message",
                                    {"body": "forged ghost"}, "@g:ghost.test"))
        for _ in range(7):  # retried as a host's queue would, past any refetch interval
            got = await room.deliver(world.b, room.events[forged["unsigned"]["seq"] - 1:])
            assert got[forged["event_id"]].get("error"), got
            await trio.sleep(REFETCH_MIN_SECONDS / 4)
        assert "forged ghost" not in await carol.bodies(room.room_id)
        r = await evil.request(world.b, "GET", f"{FED}/descriptors/ghost.test")
        assert r.status_code == 404, r.text
        fake = HostilePeer(world.net, "ghost.test", EVIL_PORT, planted)
        r = await fake.request(world.b, "GET", f"{FED}/probe")
        assert r.status_code != 200 or r.json()["result"]["ok"] is False, r.text


async def test_a_refused_descriptor_is_not_fetched_on_every_request(
        world: World, people: dict[str, Person]) -> None:
    """bloat.test's descriptor is refused (it names another server): its requests
    don't each cost b.test a fetch (issue 18, finding 9: 41 fetches in 15 s)."""
    bloat = HostilePeer(world.net, "bloat.test", BLOAT_PORT)
    bloat.descriptor = lambda: json.dumps(build_descriptor(
        "other.test", bloat.keypair, [], int(time.time() * 1000))).encode()
    async with bloat.serving():
        for _ in range(20):
            r = await bloat.request(world.b, "GET", f"{FED}/probe")
            assert r.status_code != 200 or r.json()["result"]["ok"] is False, r.text
        assert bloat.count("/.well-known/scaiwave/server") <= 2


async def test_events_for_a_room_we_dont_hold_cost_no_key_fetch(
        world: World, people: dict[str, Person]) -> None:
    """evil.test relays events "of" servers it names, in a room b.test doesn't hold:
    refused SW_FED_UNKNOWN_ROOM without b.test looking for any of those servers."""
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    async with evil.serving():
        room_id = "!nosuchroom0000:evil.test"
        events = [as_server(name, generate_keypair(), room_id, "message", {"body": "hi"},
                            f"@u:{name}") | {"unsigned": {"seq": 2 + i}}
                  for i, name in enumerate(NOWHERE)]
        r = await evil.send(world.b, events)
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert {v["error"]["code"] for v in got.values()} == {"SW_FED_UNKNOWN_ROOM"}, got
    sought = {line.get("peer") for line in world.b.logs("federation.peer_discovery_failed")}
    assert not sought & set(NOWHERE)


async def test_a_hosts_refusal_is_its_own_not_ours(world: World,
                                                   people: dict[str, Person]) -> None:
    """The host answers bob's invite with SW_FED_ROOM_FULL: bob sees its code, and
    b.test logs it as the host's refusal, never as a policy refusal of its own."""
    bob = people["bob"]
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    async with evil.serving():
        room = await joined_room(world, evil, "fullroom", bob)
        room.answer_overrides["/invites"] = lambda m, p, b: (403, json.dumps({"error": {
            "code": "SW_FED_ROOM_FULL", "message": "full"}}).encode())
        r = await bob.call("POST", f"/v1/rooms/{room.room_id}/invites",
                           {"fqid": "@zed:a.test"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_ROOM_FULL", r.text

    def logged() -> bool:  # the log is read from the server's stderr by a thread
        return bool([x for x in world.b.logs("federation.refused_by_peer")
                     if x.get("reason") == "SW_FED_ROOM_FULL"
                     and x.get("refused_by") == "evil.test"])

    await wait_for(logged, what="the host's refusal in b.test's log")
    assert not [x for x in world.b.logs("federation.policy_rejected")
                if x.get("reason") == "SW_FED_ROOM_FULL"]


async def test_a_denied_name_is_denied_on_every_port(world: World,
                                                    people: dict[str, Person]) -> None:
    """denied_peers = ["rogue.test"] also denies rogue.test:8448 (issue 18, finding 9)."""
    async with world.clients() as clients:
        admin = {"Authorization": f"Bearer {world.user('b.test', 'root', admin=True)}"}
        r = await clients["b.test"].put("/v1/admin/federation/policy", headers=admin,
                                        json={"denied_peers": ["rogue.test"]})
        assert r.status_code == 200, r.text
        try:
            rogue = HostilePeer(world.net, "rogue.test:8448", ROGUE_PORT)
            async with rogue.serving():
                r = await rogue.send(world.b, [])
                assert r.status_code == 403, r.text
                assert r.json()["error"]["code"] == "SW_FED_PEER_DENIED"
                r = await rogue.request(world.b, "GET", f"{FED}/probe")
                assert r.json()["result"]["code"] == "SW_FED_PEER_DENIED", r.text
        finally:
            r = await clients["b.test"].put("/v1/admin/federation/policy", headers=admin,
                                            json={"denied_peers": []})
            assert r.status_code == 200, r.text
