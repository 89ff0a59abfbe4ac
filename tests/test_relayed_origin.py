"""A member that cannot reach an event's origin gets the event once it can (issue 18).

a.test hosts a room; evil.test (a real TLS server with its own key, behaving
well here) is a member; b.test cannot reach evil.test at first (its
``[federation.resolve]`` sends it to a port where nothing listens yet). When
a.test relays evil.test's join and message, b.test cannot fetch evil.test's
descriptor, and takes no one else's copy of it (a room's host could hold a
key of its own under that name): the events wait, a.test's queue retries
them, and once evil.test answers on b.test's side they arrive, in order.
Nothing is lost for good, nothing is believed from a third party.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness import free_port, running, wait_for
from tests.hostile import HostilePeer
from tests.world import Person, World, make_world, open_policies

EVIL_PORT = free_port()
B_SIDE_PORT = free_port()  # where b.test looks for evil.test: nothing listens at first
FED = "/_scaiwave/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("relayed"), extra={
        "a.test": {"federation.resolve": {"evil.test": f"127.0.0.1:{EVIL_PORT}"}},
        "b.test": {"federation.resolve": {"evil.test": f"127.0.0.1:{B_SIDE_PORT}"}}})
    with running(w.a, w.b):
        yield w


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob")}


async def test_an_unreachable_origins_events_wait_until_it_answers(
        world: World, people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    evil = HostilePeer(world.net, "evil.test", EVIL_PORT)
    evil.answer(FED + "/profile", lambda m, p, b: (200, json.dumps(
        {"local_id": "mallory", "fqid": "@mallory:evil.test"}).encode()))
    async with evil.serving():
        room_id = await alice.new_room("three servers")
        await bob.accept(room_id, await alice.invite(room_id, bob))
        await alice.invite(room_id, Person.elsewhere("@mallory:evil.test"))
        await wait_for(lambda: evil.count(FED + "/send") > 0, what="the invite at evil.test")
        join = evil.event(room_id, "member", {"membership": "join", "display_name": "M"})
        r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/membership",
                               {"event": join})
        assert r.status_code == 200, r.text
        hello = evil.event(room_id, "message", {"body": "hello from a third server"})
        r = await evil.send(world.a, [hello])
        assert r.json()["results"][hello["event_id"]]["seq"] > 0

        async def deferred() -> bool:
            return any(r.get("peer") == "a.test" for r in world.b.logs(
                "federation.event.deferred"))

        await wait_for(deferred, what="b.test to defer evil.test's events")
        assert "hello from a third server" not in await bob.bodies(room_id)
        assert not world.b.logs("federation.peer_discovered_via_host")

        async def bob_has_both() -> bool:
            return ("hello from a third server" in await bob.bodies(room_id)
                    and (await bob.members(room_id)).get("@mallory:evil.test") == "join")

        # evil.test now answers b.test too (same server, same key, b.test's address for it)
        b_side = HostilePeer(world.net, "evil.test", B_SIDE_PORT, evil.keypair)
        async with b_side.serving():
            await wait_for(bob_has_both, what="evil.test's join and message at b.test")
    assert (await bob.members(room_id)) == await alice.members(room_id)
    assert await bob.bodies(room_id) == await alice.bodies(room_id)
