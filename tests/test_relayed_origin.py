"""A member that cannot reach an event's origin still gets the event (DESIGN §10).

a.test hosts a room; evil.test (a real TLS server with its own key, behaving
well here) is a member; b.test cannot reach evil.test at all (its
``[federation.resolve]`` sends it to a dead port). When a.test relays
evil.test's join and message, b.test cannot fetch evil.test's descriptor
itself: it takes the self-signed copy a.test holds, checks it as usual, and
stores both. Nothing is lost for good.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness import free_port, running, wait_for
from tests.hostile import HostilePeer
from tests.world import Person, World, make_world, open_policies

EVIL_PORT = free_port()
DEAD_PORT = free_port()  # nothing listens here
FED = "/_scaiwave/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("relayed"), extra={
        "a.test": {"federation.resolve": {"evil.test": f"127.0.0.1:{EVIL_PORT}"}},
        "b.test": {"federation.resolve": {"evil.test": f"127.0.0.1:{DEAD_PORT}"}}})
    with running(w.a, w.b):
        yield w


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob")}


async def test_an_unreachable_origins_events_verify_through_the_host(
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

        async def bob_has_both() -> bool:
            return ("hello from a third server" in await bob.bodies(room_id)
                    and (await bob.members(room_id)).get("@mallory:evil.test") == "join")

        await wait_for(bob_has_both, what="evil.test's join and message at b.test")
    assert world.b.logs("federation.peer_discovered_via_host")
    assert (await bob.members(room_id)) == await alice.members(room_id)

