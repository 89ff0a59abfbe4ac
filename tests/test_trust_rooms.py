"""A host is trusted only for what it may vouch for (issue 18, findings 3-6, 9a, 9g).

A room's host vouches for the room's order and for members foreign to us;
our users' memberships come from their own actions. Only an invitee's
server ends an invite, an ``uninvite`` ends only an invite of its own room,
and invite ids are keyed by room. A host owes a member server what was said
while that server had a member in the room, and history only under its
backfill policy. A malformed answer is no 5xx, and a phantom invitee is
dropped once its server refuses it.

Three tenants on two processes (tests/world.py) and ``evil.test``, a real
TLS server with its own key (tests/hostile.py): as a hostile host
(``HostedRoom``) or as a hostile member of our rooms. Every tenant's policy
is ``open``; c.test's also has ``max_backfill_events_per_request = 0``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import bearer, peer_row
from tests.harness import free_port, wait_for
from tests.hostile import HostedRoom, HostilePeer, ask_membership, uninvite
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
FED = "/_scaiwave/federation/v1"
MALLORY = Person.elsewhere("@mallory:evil.test")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("trustrooms"), {"evil.test": EVIL_PORT}) as w:
        yield w


@pytest.fixture(scope="module")
def evil_key() -> Any:
    from swfed.core.signing import generate_keypair

    return generate_keypair()  # one key for the module: our servers cache it


@pytest.fixture
async def evil(world: World, evil_key: Any) -> AsyncIterator[HostilePeer]:
    peer = HostilePeer(world.net, "evil.test", EVIL_PORT, evil_key)
    async with peer.serving():
        yield peer


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        r = await clients["c.test"].put(
            "/v1/admin/federation/policy", json={"max_backfill_events_per_request": 0},
            headers=bearer(world.user("c.test", "root", admin=True)))
        assert r.status_code == 200, r.text
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "carl": Person(world, clients, "c.test", "carl"),
               "bob": Person(world, clients, "b.test", "bob"),
               "carol": Person(world, clients, "b.test", "carol"),
               "dave": Person(world, clients, "b.test", "dave"),
               "root_a": Person(world, clients, "a.test", "root")}


def c_test(world: World) -> Any:
    """c.test as a request target (a tenant of a.test's process)."""
    return SimpleNamespace(name="c.test", url=world.a.url)


async def sees(person: Person, room_id: str, body: str) -> None:
    async def there() -> bool:
        return body in await person.bodies(room_id)

    await wait_for(there, what=f"{body!r} at {person.fqid}")


async def queue_empty(root: Person, peer: str) -> bool:
    return (await peer_row(root.http, root.token, peer))["queue_depth"] == 0


# -- 3: a host cannot join our users --------------------------------------------------


async def test_a_host_cannot_join_our_users_by_listing_them(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test's answer to bob's accept lists carol@b.test, never invited, as joined."""
    bob, carol = people["bob"], people["carol"]
    room = HostedRoom(evil, "forcedjoin")
    room.invite(bob.fqid)
    await room.deliver(world.b)
    room.members[carol.fqid] = "join"  # the lie
    await bob.accept(room.room_id)
    room.post("hello carol", mentions=[carol.fqid])
    room.post("the end")
    await room.deliver(world.b)
    await sees(bob, room.room_id, "the end")

    mine = (await carol.ok("GET", "/v1/me/rooms"))["data"]
    assert room.room_id not in [r["room_id"] for r in mine]
    r = await carol.call("GET", f"/v1/rooms/{room.room_id}/messages")
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"
    assert not [n for n in await carol.notifications() if n["type"] == "mention"]
    r = await carol.call("POST", f"/v1/rooms/{room.room_id}/messages", {"body": "may I?"})
    assert r.status_code == 404, r.text
    assert carol.fqid not in await bob.members(room.room_id)
    lies = [line for line in world.b.logs("federation.host_lie")
            if line.get("room_id") == room.room_id]
    assert lies and carol.fqid in lies[0]["listed"] and lies[0]["peer"] == "evil.test"


# -- 4: invites end only by the invitee's server or the room's own host -----------------


async def test_only_the_invitees_server_ends_an_invite(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test, a member of alice's room, refuses the relayed invite of bob."""
    alice, bob, root = people["alice"], people["bob"], people["root_a"]
    room_id = await alice.new_room("refusals")
    await alice.invite(room_id, MALLORY)
    r = await ask_membership(evil, world.a, room_id, "join")
    assert r.status_code == 200, r.text
    seen: list[str] = []

    def refuse_invites(method: str, path: str, body: Any) -> tuple[int, bytes]:
        out: dict[str, Any] = {}
        for e in body.get("events", []):
            if e.get("type") == "invite":
                seen.append(e["content"]["invite_id"])
                out[e["event_id"]] = {"error": {"code": "SW_FED_ROOM_FULL",
                                                "message": "no room for more"}}
            else:
                out[e["event_id"]] = {}
        return 200, json.dumps({"results": out}).encode()

    evil.answer(FED + "/send", refuse_invites)
    invite_id = await alice.invite(room_id, bob)
    await wait_for(lambda: invite_id in seen, what="evil.test to refuse the relayed invite")
    await wait_for(lambda: queue_empty(root, "evil.test"), what="a.test to take the refusal")

    assert not [n for n in await alice.notifications() if n["type"] == "invite_refused"
                and n.get("invite_id") == invite_id]
    assert (await alice.members(room_id)).get(bob.fqid) == "invite"
    await bob.accept(room_id, invite_id)
    assert (await alice.members(room_id)).get(bob.fqid) == "join"


async def test_another_rooms_host_cannot_end_an_invite(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test hosts a room b.test is in, and relays uninvites naming alice's invite."""
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    room_id = await alice.new_room("kept invite")
    invite_id = await alice.invite(room_id, bob)
    await bob.invite_to(room_id, invite_id)
    other = HostedRoom(evil, "endsothers")
    other.invite(dave.fqid)
    uninvite(other, bob.fqid, invite_id)
    uninvite(other, bob.fqid, invite_id, reason="SW_FED_ROOM_FULL")
    await other.deliver(world.b)
    # and the real room's uninvite, from a server that does not host it
    forged = evil.event(room_id, "uninvite", {"invitee": bob.fqid, "invite_id": invite_id,
                                              "reason": "cancelled"})
    r = await evil.send(world.b, [{**forged, "unsigned": {"seq": 9}}])
    assert r.json()["results"][forged["event_id"]]["error"]["code"] in (
        "SW_FED_NOT_HOST", "SW_FED_BAD_EVENT"), r.text

    assert not [n for n in await bob.notifications() if n["type"] == "invite_cancelled"]
    await bob.ok("POST", f"/v1/me/invites/{invite_id}/accept")
    assert (await alice.members(room_id)).get(bob.fqid) == "join"


async def test_an_invite_id_cannot_be_squatted_while_the_invitee_is_down(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test knows the id of alice's invite of bob and delivers its own invite under it
    while b.test is down, before alice's: both are kept, each in its room, and bob joins
    the real one."""
    alice, bob, root = people["alice"], people["bob"], people["root_a"]
    room_id = await alice.new_room("squatted")
    await alice.invite(room_id, MALLORY)  # evil.test is a member: it sees the invites
    assert (await ask_membership(evil, world.a, room_id, "join")).status_code == 200
    world.b.kill()
    try:
        invite_id = await alice.invite(room_id, bob)  # queued for b.test
        await wait_for(lambda: evil.count(FED + "/send") >= 2, what="evil.test sees the id")

        async def backing_off() -> bool:  # a.test's next try is about 8 s away
            return (await peer_row(root.http, root.token, "b.test"))["failures"] >= 3

        await wait_for(backing_off, what="a.test to back off from b.test")
    finally:
        world.b.start()
    squat = HostedRoom(evil, "squatter")
    squat.invite(bob.fqid, invite_id=invite_id)
    assert list((await squat.deliver(world.b)).values()) == [{}]
    await root.ok("POST", "/v1/admin/federation/peers/b.test/retry")
    # the real invite arrives too (on 9b66531 it was refused SW_FED_EVENT_CONFLICT; had
    # a.test's retry come first, the squat above would have been the one refused)
    await bob.invite_to(room_id, invite_id)

    r = await bob.call("POST", f"/v1/me/invites/{invite_id}/accept")
    assert r.status_code == 409 and r.json()["error"]["code"] == "SW_INVITE_AMBIGUOUS", r.text
    await bob.ok("POST", f"/v1/me/invites/{invite_id}/accept?room_id={room_id}")
    assert (await bob.ok("GET", f"/v1/rooms/{room_id}"))["host"] == "a.test"
    assert (await alice.members(room_id)).get(bob.fqid) == "join"
    assert squat.members[bob.fqid] == "invite"  # never asked to join evil.test's room
    r = await bob.call("GET", f"/v1/rooms/{squat.room_id}/messages")
    assert r.status_code == 404


# -- 5: a server whose members all left can come back ----------------------------------


async def test_a_server_whose_members_all_left_can_be_invited_back(
        world: World, people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("comeback")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    await alice.post(room_id, "first")
    await sees(bob, room_id, "first")
    await bob.ok("POST", f"/v1/rooms/{room_id}/leave")
    await alice.post(room_id, "while b.test had nobody here")
    again = await alice.invite(room_id, bob)
    await bob.accept(room_id, again)  # the invite is there at once, no gap to wait for
    await alice.post(room_id, "welcome back")
    await sees(bob, room_id, "welcome back")
    await bob.post(room_id, "glad to be back")
    await sees(alice, room_id, "glad to be back")


async def test_a_joins_answer_brings_what_the_gap_did_to_our_users(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """The host's answer to a join carries events our copy lacks (its relays behind):
    an invite of carol and a mention of bob take effect, in the host's order, not
    only their place (the convergence test once saw an invite taken this way as
    history: the host held it pending, carol never saw it, and nobody could invite
    her again)."""
    bob, carol, dave = people["bob"], people["carol"], people["dave"]
    room = HostedRoom(evil, "gapeffects")
    room.invite(bob.fqid)
    room.invite(dave.fqid)
    await room.deliver(world.b)
    await bob.accept(room.room_id)
    invite = room.invite(carol.fqid)  # relayed later: the host's queue is behind
    room.post("bob, look", mentions=[bob.fqid])
    await dave.accept(room.room_id)  # the answer's newest events hold both
    assert await carol.invite_to(room.room_id) == invite["content"]["invite_id"]
    assert any(n["type"] == "mention" and n["room_id"] == room.room_id
               for n in await bob.notifications())
    results = await room.deliver(world.b)  # the relays arrive after all: replays
    assert results and all(answer == {} for answer in results.values())
    await carol.accept(room.room_id)
    assert room.members[carol.fqid] == "join"
    assert [n["type"] for n in await carol.notifications()
            if n.get("room_id") == room.room_id] == ["invite"]


# -- 6: history only as the policy and the caller's span allow ---------------------------


async def test_a_decline_or_leave_of_an_invitee_reads_nothing(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    alice = people["alice"]
    room_id = await alice.new_room("invited only")
    await alice.post(room_id, "for members only")
    await alice.invite(room_id, MALLORY)
    await alice.invite(room_id, Person.elsewhere("@eve:evil.test"))
    for local, membership in (("mallory", "decline"), ("eve", "leave")):
        r = await ask_membership(evil, world.a, room_id, membership, local=local)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert isinstance(answer["seq"], int), answer
        assert answer["events"] == [] and answer["members"] == [], (membership, answer)


async def test_a_joins_answer_keeps_to_the_backfill_policy(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """c.test refuses backfill (0): a join's answer carries nothing from before the join."""
    carl, bob = people["carl"], people["bob"]
    room_id = await carl.new_room("no history")
    await carl.post(room_id, "before anyone came")
    await carl.invite(room_id, MALLORY)
    r = await ask_membership(evil, c_test(world), room_id, "join")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert all(e["unsigned"]["seq"] >= answer["seq"] for e in answer["events"]), answer
    assert not [e for e in answer["events"] if e["type"] == "message"]
    r = await evil.request(c_test(world), "GET", f"{FED}/rooms/{room_id}/backfill?limit=10")
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_BACKFILL_REFUSED"
    # a real member server's copy: what was said before bob came is not in it
    await bob.accept(room_id, await carl.invite(room_id, bob))
    await carl.post(room_id, "after bob came")
    await sees(bob, room_id, "after bob came")
    assert await bob.bodies(room_id) == ["after bob came"]


async def test_gap_repair_gives_nothing_from_when_a_server_had_nobody_there(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    carl = people["carl"]
    c = c_test(world)
    room_id = await carl.new_room("spans")
    await carl.invite(room_id, MALLORY)
    assert (await ask_membership(evil, c, room_id, "join")).status_code == 200
    await carl.post(room_id, "while evil.test was in")
    assert (await ask_membership(evil, c, room_id, "leave")).status_code == 200
    await carl.post(room_id, "said while evil.test had nobody here")
    await carl.invite(room_id, MALLORY)
    r = await ask_membership(evil, c, room_id, "join")
    assert r.status_code == 200, r.text
    back = r.json()["seq"]
    await carl.post(room_id, "after evil.test came back")
    r = await evil.request(c, "GET", f"{FED}/rooms/{room_id}/backfill?after=0")
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert [e["content"]["body"] for e in events if e["type"] == "message"] == [
        "after evil.test came back"]
    assert min(e["unsigned"]["seq"] for e in events) == back


# -- 9: a malformed answer, a phantom invitee --------------------------------------------


async def test_a_malformed_membership_answer_is_no_500(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    bob = people["bob"]
    room = HostedRoom(evil, "malformed")
    room.post("before bob")
    room.invite(bob.fqid)
    await room.deliver(world.b)

    def answer(method: str, path: str, body: Any) -> tuple[int, bytes]:
        ordered = room.add(body["event"])
        events: list[Any] = [{**e, "unsigned": "seq"} for e in room.events[::-1]]
        return 200, json.dumps({
            "seq": ordered["unsigned"]["seq"], "last_seq": room.last_seq,
            "members": [*room.member_list(), "x", {"fqid": 5}],
            "events": [*events, "junk", {"unsigned": {"seq": "1"}}]}).encode()

    room.answer_overrides["/membership"] = answer
    logged = len(world.b.log_lines)
    await bob.accept(room.room_id)  # 200: the malformed parts are left out
    room.post("after the odd answer")
    await room.deliver(world.b)
    await sees(bob, room.room_id, "after the odd answer")
    assert not [line for line in world.b.log_lines[logged:] if "Traceback" in line]


async def test_a_phantom_invitee_is_dropped_once_its_server_refuses(
        world: World, people: dict[str, Person]) -> None:
    """alice invites @nobody:b.test into a room b.test is in: b.test refuses the invite,
    a.test drops it (no longer listed, nor counted) and tells alice."""
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("phantom")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    phantom = Person.elsewhere("@nobody:b.test")
    invite_id = await alice.invite(room_id, phantom)

    async def dropped() -> bool:
        return phantom.fqid not in await alice.members(room_id)

    await wait_for(dropped, what="the phantom dropped at a.test")
    refused = [n for n in await alice.notifications() if n["type"] == "invite_refused"
               and n.get("invite_id") == invite_id]
    assert refused and refused[0]["error"]["code"] == "SW_FED_USER_NOT_FOUND", refused
    assert phantom.fqid not in await bob.members(room_id)
