"""Edits, deletes and reaction removals, on every copy of a room (issue 20).

Three tenants on two real processes (tests/world.py) and ``evil.test``, a
real TLS server with its own key (tests/hostile.py), as a hostile member of
alice's room and as a hostile host of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.harness import free_port, wait_for
from tests.hostile import HostedRoom, HostilePeer, ask_membership
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
MALLORY = Person.elsewhere("@mallory:evil.test")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("editdelete"), {"evil.test": EVIL_PORT}) as w:
        yield w


@pytest.fixture(scope="module")
def evil_key() -> Any:
    from swfed.core.signing import generate_keypair

    return generate_keypair()


@pytest.fixture
async def evil(world: World, evil_key: Any) -> AsyncIterator[HostilePeer]:
    peer = HostilePeer(world.net, "evil.test", EVIL_PORT, evil_key)
    async with peer.serving():
        yield peer


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob"),
               "dave": Person(world, clients, "b.test", "dave"),
               "carol": Person(world, clients, "c.test", "carol")}


async def shared_room(host: Person, *members: Person) -> str:
    room_id = await host.new_room("edits")
    for m in members:
        await host.invite(room_id, m)
        await m.accept(room_id)
    return room_id


async def search(person: Person, word: str) -> list[str]:
    return [e["event_id"] for e in (await person.ok("GET", f"/v1/search?q={word}"))["data"]]


async def shown(person: Person, room_id: str, event_id: str) -> dict[str, Any]:
    event = await person.event(room_id, event_id)
    return event["content"] if event is not None else {}


async def settled(person: Person, room_id: str, event_id: str) -> str | None:
    event = await person.event(room_id, event_id)
    return None if event is None or event["status"] == "pending" else str(event["status"])


async def test_an_edit_and_a_delete_reach_every_copy_and_its_search(
        people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    room_id = await shared_room(alice, bob, carol)
    first = (await bob.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "body": "the quokka plan", "mentions": [alice.fqid]}))["event_id"]
    await wait_for(lambda: carol.event(room_id, first), what="bob's message at c.test")
    reply = (await carol.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "body": "nice", "in_reply_to": first}))["event_id"]
    everyone = (alice, bob, carol)
    for p in everyone:
        await wait_for(lambda p=p: p.event(room_id, reply), what=f"the reply at {p.fqid}")

    # bob edits his message (b.test is a member server: the host orders the edit)
    edit = (await bob.ok("PATCH", f"/v1/rooms/{room_id}/messages/{first}",
                         {"body": "the wombat plan"}))["event_id"]
    await wait_for(lambda: settled(bob, room_id, edit), what="the host to order bob's edit")
    assert await settled(bob, room_id, edit) == "sent"
    for p in everyone:
        async def edited(p: Person = p) -> bool:
            return (await shown(p, room_id, first)).get("body") == "the wombat plan"

        await wait_for(edited, what=f"the edit at {p.fqid}")
        content = await shown(p, room_id, first)
        assert content["edited_at"] > 0 and content["edit_id"] == edit
        assert await search(p, "quokka") == [] and await search(p, "wombat") == [first]
    # the edit history is kept (the edit events)
    history = [e for e in await alice.events(room_id) if e["type"] == "edit"]
    assert [e["content"]["body"] for e in history] == ["the wombat plan"]

    # alice, the room's creator, deletes bob's message: b.test obeys its host
    delete = (await alice.ok("DELETE", f"/v1/rooms/{room_id}/messages/{first}"))["event_id"]
    for p in everyone:
        async def gone(p: Person = p) -> bool:
            return "deleted" in await shown(p, room_id, first)

        await wait_for(gone, what=f"the delete at {p.fqid}")
        content = await shown(p, room_id, first)
        assert content == {"deleted": {"by": alice.fqid, "at": content["deleted"]["at"],
                                       "event_id": delete}}
        assert await search(p, "wombat") == [] and await search(p, "quokka") == []
        edits = [e for e in await p.events(room_id) if e["type"] == "edit"]
        assert all("body" not in e["content"] for e in edits)
        # the reply stays, pointing at the tombstone
        assert (await shown(p, room_id, reply))["in_reply_to"] == first
    assert not [n for n in await alice.notifications() if n.get("event_id") == first]

    # nothing more can be done to a tombstone
    r = await bob.call("PATCH", f"/v1/rooms/{room_id}/messages/{first}", {"body": "again"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "SW_EVENT_DELETED"


async def test_who_may_edit_and_delete(people: dict[str, Person]) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    room_id = await shared_room(alice, bob, dave)
    mine = await alice.post(room_id, "alice's words")
    await wait_for(lambda: bob.event(room_id, mine), what="alice's message at b.test")
    r = await bob.call("PATCH", f"/v1/rooms/{room_id}/messages/{mine}", {"body": "bob's"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_NOT_SENDER"
    r = await bob.call("DELETE", f"/v1/rooms/{room_id}/messages/{mine}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_NOT_ROOM_ADMIN"
    bobs = await bob.post(room_id, "bob's words")
    await wait_for(lambda: dave.event(room_id, bobs), what="bob's message for dave")
    r = await dave.call("DELETE", f"/v1/rooms/{room_id}/messages/{bobs}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_NOT_ROOM_ADMIN"
    for bad in ({}, {"body": ""}, {"body": "x", "in_reply_to": mine}):
        r = await alice.call("PATCH", f"/v1/rooms/{room_id}/messages/{mine}", bad)
        assert r.status_code == 400, (bad, r.text)
    r = await alice.call("PATCH", f"/v1/rooms/{room_id}/messages/{'0' * 8}-0000-4000-8000-"
                         f"{'0' * 12}", {"body": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_EVENT_NOT_FOUND"
    # a sender deletes their own message, even in a room hosted elsewhere
    gone = (await bob.ok("DELETE", f"/v1/rooms/{room_id}/messages/{bobs}"))["event_id"]
    await wait_for(lambda: settled(bob, room_id, gone), what="the host to order the delete")
    assert await settled(bob, room_id, gone) == "sent"
    for p in (alice, bob, dave):
        async def deleted(p: Person = p) -> bool:
            return "deleted" in await shown(p, room_id, bobs)

        await wait_for(deleted, what=f"bob's delete at {p.fqid}")


async def test_a_reaction_comes_off_on_every_copy(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await shared_room(alice, bob)
    msg = await alice.post(room_id, "react to me")
    await wait_for(lambda: bob.event(room_id, msg), what="the message at b.test")
    reaction = (await bob.ok("POST", f"/v1/rooms/{room_id}/messages/{msg}/reactions",
                             {"key": "👍"}))["event_id"]
    await wait_for(lambda: alice.event(room_id, reaction), what="the reaction at a.test")
    r = await bob.call("DELETE", f"/v1/rooms/{room_id}/messages/{msg}/reactions/🎉")
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_EVENT_NOT_FOUND"
    await bob.ok("DELETE", f"/v1/rooms/{room_id}/messages/{msg}/reactions/👍")
    for p in (alice, bob):
        async def off(p: Person = p) -> bool:
            return "key" not in await shown(p, room_id, reaction)

        await wait_for(off, what=f"the reaction off at {p.fqid}")
        assert (await shown(p, room_id, reaction))["relates_to"] == msg
    # and on again: a new reaction
    again = (await bob.ok("POST", f"/v1/rooms/{room_id}/messages/{msg}/reactions",
                          {"key": "👍"}))["event_id"]
    assert again != reaction
    await wait_for(lambda: alice.event(room_id, again), what="the new reaction at a.test")


# -- hostile peers ----------------------------------------------------------------------


async def test_a_member_server_cannot_edit_or_delete_others_words(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test, a member of alice's room, sends mallory's edit and delete of bob's
    message to the host: refused, and nobody's copy changes."""
    alice, bob = people["alice"], people["bob"]
    room_id = await shared_room(alice, bob)
    await alice.invite(room_id, MALLORY)
    r = await ask_membership(evil, world.a, room_id, "join")
    assert r.status_code == 200, r.text
    bobs = await bob.post(room_id, "bob says so")
    await wait_for(lambda: alice.event(room_id, bobs), what="bob's message at a.test")
    edit = evil.event(room_id, "edit", {"relates_to": bobs, "body": "bob is wrong"})
    delete = evil.event(room_id, "delete", {"relates_to": bobs})
    r = await evil.send(world.a, [edit, delete])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[edit["event_id"]]["error"]["code"] == "SW_FED_NOT_ALLOWED"
    assert results[delete["event_id"]]["error"]["code"] == "SW_FED_NOT_ALLOWED"
    for p in (alice, bob):
        assert (await shown(p, room_id, bobs)).get("body") == "bob says so"
    assert await alice.event(room_id, edit["event_id"]) is None


async def test_a_host_cannot_relay_an_edit_of_our_users_words(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test hosts a room bob is in, and relays mallory's edit of bob's message."""
    bob = people["bob"]
    room = HostedRoom(evil, "editsothers")
    room.invite(bob.fqid)
    await room.deliver(world.b)
    await bob.accept(room.room_id)
    mine = await bob.post(room.room_id, "bob's own words")
    await wait_for(lambda: evil.count("/_scaiwave/federation/v1/send") > 0,
                   what="bob's message to reach its host")
    sent = next(e for _, path, body in evil.requests if path.endswith("/send")
                for e in body.get("events", []) if e.get("event_id") == mine)
    room.add(sent)
    edit = room.add(evil.event(room.room_id, "edit", {"relates_to": mine,
                                                      "body": "bob is wrong"}))
    results = await room.deliver(world.b)
    assert results[edit["event_id"]]["error"]["code"] == "SW_FED_NOT_ALLOWED"
    assert (await shown(bob, room.room_id, mine)).get("body") == "bob's own words"


# -- a deleted event in history: a tombstone in its place ----------------------------


async def test_the_host_serves_a_deleted_message_as_a_tombstone_in_its_place(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """A member server repairing a gap gets every seq: a deleted message's tombstone
    (no words, no signature) where the message was."""
    alice = people["alice"]
    room_id = await alice.new_room("tombstones")
    await alice.invite(room_id, MALLORY)
    r = await ask_membership(evil, world.a, room_id, "join")
    assert r.status_code == 200, r.text
    doomed = await alice.post(room_id, "the quokka secret")
    await alice.post(room_id, "after it")
    delete = (await alice.ok("DELETE", f"/v1/rooms/{room_id}/messages/{doomed}"))["event_id"]
    r = await evil.request(world.a, "GET",
                           f"/_scaiwave/federation/v1/rooms/{room_id}/backfill?after=0&limit=50")
    assert r.status_code == 200, r.text
    page = r.json()["events"]
    seqs = [e["unsigned"]["seq"] for e in page]
    # from evil.test's join on, no hole
    assert seqs == list(range(seqs[0], r.json()["last_seq"] + 1)) and len(seqs) == 4
    served = next(e for e in page if e["event_id"] == doomed)
    assert "signatures" not in served and served["content"]["deleted"]["event_id"] == delete
    assert "quokka" not in r.text


async def test_a_member_server_repairs_across_a_tombstone(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """evil.test hosts a room bob is in; bob's server misses two events, one of them since
    deleted: the repair page's tombstone fills its place and the copy moves on."""
    bob = people["bob"]
    room = HostedRoom(evil, "repairtomb")
    room.invite(bob.fqid)
    await room.deliver(world.b)
    await bob.accept(room.room_id)
    kept = room.post("kept words")
    await room.deliver(world.b)
    await wait_for(lambda: bob.event(room.room_id, kept["event_id"]), what="kept at b.test")
    gone = room.post("words since deleted")
    seq = gone["unsigned"]["seq"]
    deleter = evil.event(room.room_id, "delete", {"relates_to": gone["event_id"]})
    room.events[seq - 1] = {**{k: v for k, v in gone.items() if k != "signatures"},
                            "content": {"deleted": {"by": room.local, "at": 1,
                                                    "event_id": deleter["event_id"]}}}
    room.add(deleter)
    last = room.post("the end")
    room.delivered["b.test"] = room.last_seq - 1  # b.test misses the tombstone and the delete
    await room.deliver(world.b)
    await wait_for(lambda: bob.event(room.room_id, gone["event_id"]),
                   what="the tombstone repaired at b.test")
    assert (await shown(bob, room.room_id, gone["event_id"]))["deleted"]["event_id"] == (
        deleter["event_id"])
    assert (await shown(bob, room.room_id, kept["event_id"])).get("body") == "kept words"

    async def synced() -> bool:
        events = await bob.events(room.room_id)
        return {e["seq"] for e in events if e["status"] == "sent"} >= set(
            range(1, last["unsigned"]["seq"] + 1))

    await wait_for(synced, what="b.test's copy to hold every seq")


async def test_a_delete_made_while_a_server_was_away_reaches_its_old_copy(
        people: dict[str, Person]) -> None:
    """bob's server had the message, then none of its users was in the room when alice
    deleted it: the join's history brings the delete, and the old copy loses the words."""
    alice, bob = people["alice"], people["bob"]
    room_id = await shared_room(alice, bob)
    doomed = await alice.post(room_id, "the armadillo memo")
    await wait_for(lambda: bob.event(room_id, doomed), what="the memo at b.test")
    await bob.ok("POST", f"/v1/rooms/{room_id}/leave")
    await wait_for(lambda: _left(alice, room_id, bob), what="bob's leave at the host")
    await alice.ok("DELETE", f"/v1/rooms/{room_id}/messages/{doomed}")
    await bob.accept(room_id, await alice.invite(room_id, bob))

    async def gone() -> bool:
        return "deleted" in await shown(bob, room_id, doomed)

    await wait_for(gone, what="the delete at b.test's old copy")
    assert await search(bob, "armadillo") == []


async def _left(host: Person, room_id: str, who: Person) -> bool:
    return (await host.members(room_id)).get(who.fqid) != "join"
