"""Rooms that converge: every server's copy of a room equals the host's (DESIGN §10).

Three tenants on two real processes (tests/world.py): a.test and c.test
share a process, b.test is another. Each test drives one of the ways copies
used to fork: a join racing the host's order, refusals by the host, holes,
invites that never ended, tenants of one process sharing a room.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from tests.harness import running, wait_for
from tests.test_stream import sse
from tests.world import Person, World, make_world, open_policies, ordered


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("converge"))
    with running(w.a, w.b):
        yield w


@pytest.fixture
async def clients(world: World) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with world.clients() as c:
        await open_policies(world, c)
        yield c


@pytest.fixture
def people(world: World, clients: dict[str, httpx.AsyncClient]) -> dict[str, Person]:
    return {"alice": Person(world, clients, "a.test", "alice"),
            "bob": Person(world, clients, "b.test", "bob"),
            "carol": Person(world, clients, "c.test", "carol"),
            "dave": Person(world, clients, "b.test", "dave"),
            "admin_b": Person(world, clients, "b.test", "root")}


async def same_copy(host: Person, member: Person, room_id: str, since: int) -> bool:
    mine = ordered(await member.events(room_id), since)
    return mine == ordered(await host.events(room_id), since) and bool(mine)


async def test_a_message_posted_the_instant_the_accept_returns_reaches_the_new_member(
        people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    for i in range(5):
        room_id = await alice.new_room(f"race {i}")
        for member in (bob, carol):  # another server, and another tenant of alice's process
            await alice.invite(room_id, member)
            await member.accept(room_id)
            await alice.post(room_id, f"hello {member.fqid} {i}")  # at once
        wanted = [f"hello {bob.fqid} {i}", f"hello {carol.fqid} {i}"]
        for member in (bob, carol):
            await wait_for(partial(_has_all, member, room_id, wanted),
                           what=f"{member.fqid} to see both hellos")


async def _has_all(person: Person, room_id: str, wanted: list[str]) -> bool:
    seen = await person.bodies(room_id)
    return all(w in seen for w in wanted)


async def test_accepting_while_the_host_is_down_changes_nothing(
        world: World, people: dict[str, Person]) -> None:
    bob, alice = people["bob"], people["alice"]
    room_id = await bob.new_room("hosted by b")
    await bob.invite(room_id, alice)
    invite_id = await alice.invite_to(room_id)
    world.b.kill()
    try:
        r = await alice.call("POST", f"/v1/me/invites/{invite_id}/accept")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "SW_FED_PEER_UNREACHABLE"
        assert "nothing changed" in r.json()["error"]["message"]
        assert (await alice.call("GET", f"/v1/rooms/{room_id}")).status_code == 404
    finally:
        world.b.start()
    # the invite is still pending: accepting works once the host is back
    await alice.ok("POST", f"/v1/me/invites/{invite_id}/accept")
    assert (await bob.members(room_id)).get(alice.fqid) == "join"
    assert (await alice.members(room_id)) == await bob.members(room_id)


async def test_a_post_the_host_refuses_settles_as_refused(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    room_id = await alice.new_room("refusals")
    for member in (bob, carol):
        await alice.invite(room_id, member)
        await member.accept(room_id)
    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": False})
    seen: list[tuple[int, str]] = []  # bob's live stream: (id, status) of his post
    async with bob.http.stream("GET", "/v1/me/stream",
                               headers={"Authorization": f"Bearer {bob.token}"}) as resp:
        items = sse(resp)
        event_id = await bob.post(room_id, "while the host said no")
        with trio.move_on_after(15):
            async for item in items:
                if item["event"] == "event" and item["data"]["event_id"] == event_id:
                    seen.append((int(item["id"]), item["data"]["status"]))
                    if item["data"]["status"] == "refused":
                        break

    async def refused() -> dict[str, Any] | None:
        e = await bob.event(room_id, event_id)
        return e if e is not None and e["status"] == "refused" else None

    settled = await wait_for(refused, what="bob's post to settle as refused")
    assert settled["error"]["code"] == "SW_FED_ROOM_NOT_FEDERATED"
    assert await alice.event(room_id, event_id) is None
    assert await people["dave"].event(room_id, event_id) is None  # not bob's: unseen
    # the change reached bob's live stream: refused, under a newer id than the pending
    # item (which a stream that was slower than the host's answer never shows)
    assert seen and seen[-1][1] == "refused"
    assert [status for _, status in seen] in (["refused"], ["pending", "refused"])
    assert seen == sorted(seen)

    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": True})
    later = await bob.post(room_id, "and now it does")

    async def sent() -> bool:
        e = await bob.event(room_id, later)
        return e is not None and e["status"] == "sent"

    await wait_for(sent, what="bob's later post to be sent")
    await wait_for(lambda: same_copy(alice, bob, room_id, 1), what="bob's copy = alice's")
    await wait_for(lambda: same_copy(alice, carol, room_id, 1), what="carol's copy = alice's")
    # the refused one stays last in bob's own view, marked
    assert [e["event_id"] for e in await bob.events(room_id)][-1] == event_id


async def test_refused_join_and_leave_change_nothing(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("no")
    await alice.invite(room_id, bob)
    invite_id = await bob.invite_to(room_id)
    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": False})
    r = await bob.call("POST", f"/v1/me/invites/{invite_id}/accept")
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_ROOM_NOT_FEDERATED"
    assert (await bob.call("GET", f"/v1/rooms/{room_id}")).status_code == 404
    assert (await alice.members(room_id)).get(bob.fqid) == "invite"

    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": True})
    await bob.ok("POST", f"/v1/me/invites/{invite_id}/accept")
    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": False})
    r = await bob.call("POST", f"/v1/rooms/{room_id}/leave")
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_ROOM_NOT_FEDERATED"
    assert (await bob.members(room_id)).get(bob.fqid) == "join"
    assert (await alice.members(room_id)).get(bob.fqid) == "join"

    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": True})
    await bob.ok("POST", f"/v1/rooms/{room_id}/leave")
    assert bob.fqid not in await alice.members(room_id)
    await bob.accept(room_id, await alice.invite(room_id, bob))  # and he can come back
    assert (await alice.members(room_id)).get(bob.fqid) == "join"


async def test_holes_are_repaired_without_an_admin(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    room_id = await alice.new_room("holes")
    for member in (bob, carol, people["admin_b"]):  # b's admin sets b's flag from inside
        await alice.invite(room_id, member)
        await member.accept(room_id)
    first = await bob.events(room_id)
    since = min(e["seq"] for e in first if e["type"] == "member" and e["sender"] == bob.fqid)

    # 1. the member server's flag off: the host's relays are refused there, then repaired
    await people["admin_b"].ok("PATCH", f"/v1/rooms/{room_id}", {"federate": False})
    for i in range(3):
        await alice.post(room_id, f"while b said no {i}")
    await people["admin_b"].ok("PATCH", f"/v1/rooms/{room_id}", {"federate": True})
    await wait_for(lambda: same_copy(alice, bob, room_id, since), what="b repaired")

    # 2. the host's flag off: its rows are held, then sent
    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": False})
    for i in range(3):
        await alice.post(room_id, f"while a said no {i}")
    assert "while a said no 0" not in await carol.bodies(room_id)
    await alice.ok("PATCH", f"/v1/rooms/{room_id}", {"federate": True})
    await wait_for(lambda: same_copy(alice, carol, room_id, 1), what="c got the held rows")

    # 3. away after leaving: b.test had no member while these were posted
    await bob.ok("POST", f"/v1/rooms/{room_id}/leave")
    for i in range(3):
        await alice.post(room_id, f"while bob was away {i}")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    await alice.post(room_id, "welcome back")
    await wait_for(lambda: same_copy(alice, bob, room_id, since), what="b caught up")
    assert "while bob was away 2" in await bob.bodies(room_id)


async def test_invites_that_end(people: dict[str, Person]) -> None:
    alice, bob, carol, dave = people["alice"], people["bob"], people["carol"], people["dave"]
    room_id = await alice.new_room("invites")

    # a user who does not exist: b.test refuses, the invite ends, alice is told
    r = await alice.call("POST", f"/v1/rooms/{room_id}/invites", {"fqid": "@nobody:b.test"})
    assert r.status_code == 201, r.text
    ghost = r.json()["invite_id"]

    async def told() -> dict[str, Any] | None:
        return next((n for n in await alice.notifications()
                     if n["type"] == "invite_refused" and n.get("invite_id") == ghost), None)

    note = await wait_for(told, what="alice told the invite was refused")
    assert note["invitee"] == "@nobody:b.test"
    assert note["error"]["code"] == "SW_FED_USER_NOT_FOUND"
    assert "@nobody:b.test" not in await alice.members(room_id)

    # cancelled: bob can no longer accept it; a new invite is a new one
    first = await alice.invite(room_id, bob)
    await bob.invite_to(room_id)
    cancelled = await alice.ok("DELETE", f"/v1/rooms/{room_id}/invites/{first}")
    assert cancelled["state"] == "cancelled"
    assert bob.fqid not in await alice.members(room_id)

    async def bob_told() -> bool:
        return any(n["type"] == "invite_cancelled" and n.get("invite_id") == first
                   for n in await bob.notifications())

    await wait_for(bob_told, what="bob told the invite was cancelled")
    r = await bob.call("POST", f"/v1/me/invites/{first}/accept")
    assert r.status_code == 409 and r.json()["error"]["code"] == "SW_INVITE_NOT_PENDING"
    second = await alice.invite(room_id, bob)
    assert second != first
    await bob.accept(room_id, second)

    # a member on another server invites, through the host: carol (c.test), dave (b.test)
    await bob.invite(room_id, carol)
    await carol.accept(room_id)
    await bob.invite(room_id, dave)
    await dave.accept(room_id)
    members = await alice.members(room_id)
    assert {members.get(p.fqid) for p in (bob, carol, dave)} == {"join"}
    await wait_for(lambda: _members_equal(alice, [bob, carol, dave], room_id),
                   what="every copy's member list = the host's")


async def _members_equal(host: Person, others: list[Person], room_id: str) -> bool:
    want = await host.members(room_id)
    return all([await p.members(room_id) == want for p in others])


async def test_tenants_of_one_process_share_rooms_as_servers_do(
        people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    # a federated DM between two tenants of one process, and one to another process
    for host, guest in ((alice, carol), (carol, bob)):
        dm = await host.ok("POST", "/v1/me/federated-dms", {"fqid": guest.fqid})
        room_id = dm["room_id"]
        assert dm["host"] == host.server
        await guest.accept(room_id)
        await host.post(room_id, f"hi {guest.fqid}")
        await guest.post(room_id, f"hi {host.fqid}")
        await wait_for(partial(_has_all, host, room_id, [f"hi {guest.fqid}", f"hi {host.fqid}"]),
                       what="both messages at the host")
        await wait_for(partial(same_copy, host, guest, room_id, 1),
                       what="the guest's copy = the host's")
        room = await guest.ok("GET", f"/v1/rooms/{room_id}")
        assert room["federated"] is True and room["host"] == host.server
