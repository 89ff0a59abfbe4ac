"""Typing (issue 20): a short-lived signal across servers, never stored, rate limited,
refused for non-members. Real processes (tests/world.py) and evil.test, a real TLS
server with its own key (tests/hostile.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from tests.conftest import bearer
from tests.harness import free_port, wait_for
from tests.hostile import HostilePeer, ask_membership
from tests.test_stream import sse
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
FED = "/_scaiwave/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("typing"), {"evil.test": EVIL_PORT}) as w:
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


async def typing_seen(person: Person, found: list[dict[str, Any]],
                      ready: trio.Event) -> None:
    """Collect the typing signals ``person``'s live stream gets."""
    async with person.http.stream("GET", "/v1/me/stream",
                                  headers=bearer(person.token)) as r:
        assert r.status_code == 200
        ready.set()
        async for item in sse(r):
            if item.get("event") == "typing":
                assert "id" not in item  # never stored: nothing to resume
                found.append(item["data"])


async def test_typing_reaches_the_other_servers_streams(people: dict[str, Person]) -> None:
    alice, bob, carol, dave = people["alice"], people["bob"], people["carol"], people["dave"]
    room_id = await alice.new_room("typing")
    for p in (bob, carol):
        await p.accept(room_id, await alice.invite(room_id, p))
    seen: dict[str, list[dict[str, Any]]] = {p.fqid: [] for p in (alice, bob, carol, dave)}
    async with trio.open_nursery() as nursery:
        for p in (alice, bob, carol, dave):
            ready = trio.Event()
            nursery.start_soon(typing_seen, p, seen[p.fqid], ready)
            await ready.wait()
        # bob types on a member server: the host relays it to c.test
        assert (await bob.ok("POST", f"/v1/rooms/{room_id}/typing", {"typing": True})) == {
            "typing": True}
        for p in (alice, carol):
            await wait_for(lambda p=p: any(s["user"] == bob.fqid and s["typing"]
                                           for s in seen[p.fqid]),
                           what=f"bob typing at {p.fqid}")
        # alice, on the host, stops: everyone hears
        await alice.ok("POST", f"/v1/rooms/{room_id}/typing", {"typing": True})
        await alice.ok("POST", f"/v1/rooms/{room_id}/typing", {"typing": False})
        for p in (bob, carol):
            await wait_for(lambda p=p: any(s["user"] == alice.fqid and not s["typing"]
                                           for s in seen[p.fqid]),
                           what=f"alice stopped at {p.fqid}")
        nursery.cancel_scope.cancel()
    assert all(s["room_id"] == room_id and s["until"] > 0 for v in seen.values() for s in v)
    assert not [s for s in seen[bob.fqid] if s["user"] == bob.fqid]  # not to oneself
    assert not seen[dave.fqid]  # not in the room
    # never stored: nothing in the room's events
    assert not [e for e in await alice.events(room_id) if e["type"] not in (
        "member", "invite")]


async def test_typing_is_refused_outside_a_room_and_rate_limited(
        people: dict[str, Person]) -> None:
    alice, dave = people["alice"], people["dave"]
    room_id = await alice.new_room("typing limits")
    r = await dave.call("POST", f"/v1/rooms/{room_id}/typing", {"typing": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"
    r = await alice.call("POST", f"/v1/rooms/{room_id}/typing", {"typing": "yes"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_BAD_TYPE"
    codes = []
    for _ in range(12):
        r = await alice.call("POST", f"/v1/rooms/{room_id}/typing", {"typing": True})
        codes.append(r.status_code)
    assert 200 in codes and 429 in codes and set(codes) == {200, 429} and codes[0] == 200
    assert r.json()["error"]["code"] == "SW_RATE_LIMITED" and "Retry-After" in r.headers


async def test_a_peer_cannot_say_who_types_where_it_has_no_member(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("typing hostile")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    # evil.test has no member in the room; nor may it speak for b.test's bob
    for user in ("@mallory:evil.test", bob.fqid):
        r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/typing",
                               {"user": user, "typing": True})
        assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_NOT_MEMBER", r.text
    r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/typing",
                           {"user": 5, "typing": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_FED_BAD_REQUEST"
    # a member server hears typing only from the room's host
    r = await evil.request(world.b, "POST", f"{FED}/rooms/{room_id}/typing",
                           {"user": alice.fqid, "typing": True})
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_NOT_MEMBER"
    # and a member peer's flood is cut
    await alice.invite(room_id, Person.elsewhere("@mallory:evil.test"))
    r = await ask_membership(evil, world.a, room_id, "join")
    assert r.status_code == 200, r.text
    async def flood() -> None:
        for _ in range(10):
            r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/typing",
                                   {"user": "@mallory:evil.test", "typing": True})
            codes.append(r.status_code)

    codes: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(5):  # 50 at once: past the burst of 20 whatever the machine's pace
            nursery.start_soon(flood)
    assert 200 in codes and 429 in codes and set(codes) == {200, 429}
