"""Trust and order at the seams (issue 18 [K]): a lying host, a member out of order.

A lying host (evil.test hosting a room as tests/hostile.HostedRoom does,
then lying in its repair pages) gets a bounded repair: few requests, each
seq stored once, few log lines, and backoff instead of polling. A member's
events are ordered as it sent them: a pipelined ``/send`` that names an
event the host does not have yet is held back (transient), and a reply or
reaction never goes before its target. What is asserted is what a user, a
peer and an admin see: dave's messages, the host's answers, the server log.

Two tenants' processes as in tests/test_hostile.py (tests/world.py), and
evil.test, a real TLS server with its own key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from tests.harness import free_port, wait_for
from tests.hostile import HostedRoom, HostilePeer, ok_send
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
FED = "/_scaiwave/federation/v1"
BACKFILL = "/backfill"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("trust"), {"evil.test": EVIL_PORT}) as w:
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
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "dave": Person(world, clients, "b.test", "dave"),
               "root_a": Person(world, clients, "a.test", "root")}


async def dave_joins(world: World, evil: HostilePeer, dave: Person, name: str) -> HostedRoom:
    """evil.test hosts a room, invites dave (b.test) and orders his join: b's copy starts."""
    room = HostedRoom(evil, name)
    room.invite(dave.fqid)
    await room.deliver(world.b)
    await dave.accept(room.room_id)
    await wait_for(lambda: _joined(dave, room), what="dave's join ordered by evil.test")
    return room


async def _joined(dave: Person, room: HostedRoom) -> bool:
    return (await dave.members(room.room_id)).get(dave.fqid) == "join"


def page(room: HostedRoom, events: list[dict[str, Any]], last_seq: int) -> tuple[int, bytes]:
    return 200, json.dumps({"room_id": room.room_id, "events": events,
                            "last_seq": last_seq}).encode()


def asked_after(evil: HostilePeer, room: HostedRoom) -> list[int]:
    """The ``after`` of every repair page b.test asked evil.test for in this room."""
    return [int(path.partition("after=")[2].partition("&")[0])
            for _, path, _ in evil.requests
            if room.room_id in path and BACKFILL in path and "after=" in path]


def failures(world: World, room: HostedRoom) -> list[dict[str, Any]]:
    return [line for line in world.b.logs("federation.repair.failed")
            if line.get("room_id") == room.room_id]


async def open_a_gap(world: World, room: HostedRoom) -> None:
    """evil.test orders five messages and relays only the last: b.test repairs the gap."""
    for i in range(5):
        room.post(f"m{i}")
    assert await room.deliver(world.b, room.events[-1:]) == {room.events[-1]["event_id"]: {}}


async def lied_to(world: World, evil: HostilePeer, room: HostedRoom, attempts: int) -> None:
    """Until b.test's repair has failed ``attempts`` times, or asked a silly number of pages
    (a repair that never stops: the assertions after say so)."""
    await wait_for(lambda: len(failures(world, room)) >= attempts
                   or len(asked_after(evil, room)) > 50, timeout=40,
                   what=f"{attempts} failed repairs (or a repair that does not stop)")


def log_lines_of(world: World, room: HostedRoom, since: int) -> int:
    return sum(1 for line in world.b.log_lines[since:] if room.room_id in line)


async def test_junk_pages_under_one_seq_are_stored_once_and_repair_backs_off(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """The finding: a host claiming last_seq 10^12 answers every page with fresh signed
    junk, many events under the next seq. At 9b66531 b.test asked hundreds of pages in
    seconds and stored each seq twenty times; now the first page is a lie it names."""
    dave = people["dave"]
    room = await dave_joins(world, evil, dave, "junk")
    since = len(world.b.log_lines)

    def junk(method: str, path: str, body: Any) -> tuple[int, bytes]:
        after = asked_after(evil, room)[-1]
        events = [{**evil.event(room.room_id, "message", {"body": f"junk {uuid.uuid4()}"}),
                   "unsigned": {"seq": after + 1}} for _ in range(20)]
        return page(room, events, 10**12)

    room.answer_overrides[BACKFILL] = junk
    await open_a_gap(world, room)
    await lied_to(world, evil, room, attempts=2)

    asked = asked_after(evil, room)
    assert len(asked) == 2, f"{len(asked)} repair pages asked of a lying host"
    events = await dave.events(room.room_id)
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs)), "a host seq stored more than once"
    assert not [e for e in events if e["content"].get("body", "").startswith("junk")]
    first, second = failures(world, room)[:2]
    assert first["reason"] == "SW_FED_BAD_RESPONSE" and "out of order" in first["message"]
    assert 1.0 <= first["retry_in_s"] < second["retry_in_s"]  # backed off, not polled
    assert log_lines_of(world, room, since) <= 20


async def test_a_host_claiming_more_than_it_delivers_is_backed_off(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """Each page one real, signed, next event, and last_seq 10^12: at 9b66531 every page
    moved the mark by one and repair asked for the next at once, for ever."""
    dave = people["dave"]
    room = await dave_joins(world, evil, dave, "claims")
    since = len(world.b.log_lines)

    def one_more(method: str, path: str, body: Any) -> tuple[int, bytes]:
        after = asked_after(evil, room)[-1]
        event = {**evil.event(room.room_id, "message", {"body": f"one of {after}"}),
                 "unsigned": {"seq": after + 1}}
        return page(room, [event], 10**12)

    room.answer_overrides[BACKFILL] = one_more
    await open_a_gap(world, room)
    await lied_to(world, evil, room, attempts=2)

    assert len(asked_after(evil, room)) == 2
    first, second = failures(world, room)[:2]
    assert "claims more than it delivers" in first["message"]
    assert first["retry_in_s"] < second["retry_in_s"]
    assert log_lines_of(world, room, since) <= 20


async def test_events_outside_the_asked_range_are_not_stored(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """Asked for what follows our mark, the host answers events far beyond it (and one at
    a seq we hold): none is stored, and the attempt fails (at 9b66531 they were stored,
    visible to dave as if the host had ordered them)."""
    dave = people["dave"]
    room = await dave_joins(world, evil, dave, "range")

    def far(method: str, path: str, body: Any) -> tuple[int, bytes]:
        after = asked_after(evil, room)[-1]
        events = [{**evil.event(room.room_id, "message", {"body": f"far {seq}"}),
                   "unsigned": {"seq": seq}} for seq in (after, after + 1000, after + 1001)]
        return page(room, events, after + 1001)

    room.answer_overrides[BACKFILL] = far
    await open_a_gap(world, room)
    await lied_to(world, evil, room, attempts=1)

    assert len(asked_after(evil, room)) == 1
    assert not [b for b in await dave.bodies(room.room_id) if b.startswith("far")]
    assert "outside the asked range" in failures(world, room)[0]["message"]


async def test_an_honest_host_after_its_lies_is_repaired_from(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """Backing off is not giving up: once the host answers truly, the gap closes."""
    dave = people["dave"]
    room = await dave_joins(world, evil, dave, "honest")
    room.answer_overrides[BACKFILL] = lambda method, path, body: page(room, [], 10**12)
    await open_a_gap(world, room)
    await lied_to(world, evil, room, attempts=1)
    del room.answer_overrides[BACKFILL]  # the true pages of tests/hostile.HostedRoom

    async def whole() -> bool:
        return await dave.bodies(room.room_id) == [f"m{i}" for i in range(5)]

    await wait_for(whole, timeout=30, what="the gap repaired from the honest host")


# -- a member's order ---------------------------------------------------------------


async def evil_member(world: World, evil: HostilePeer, alice: Person) -> str:
    """alice (a.test) hosts a room; evil.test's mallory is in it."""
    room_id = await alice.new_room("order")
    await alice.invite(room_id, Person.elsewhere("@mallory:evil.test"))
    join = evil.event(room_id, "member", {"membership": "join", "display_name": "m"})
    r = await evil.request(world.a, "POST", f"{FED}/rooms/{room_id}/membership",
                           {"event": join})
    assert r.status_code == 200, r.text
    return room_id


async def send_after(evil: HostilePeer, world: World, events: list[dict[str, Any]],
                     after: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"origin": "evil.test", "txn_id": str(uuid.uuid4()),
                            "events": events}
    if after is not None:
        body["after"] = {"room_id": after["room_id"], "event_id": after["event_id"]}
    r = await evil.request(world.a, "POST", f"{FED}/send", body)
    assert r.status_code == 200, r.text
    return dict(r.json()["results"])


async def test_a_pipelined_batch_whose_first_has_not_arrived_is_held_back(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """The finding: a member's two /send in flight, the first lost with a host restart,
    the second stored, the first's events after it. Now the second names the first's last
    event, and the host holds it back (transient) until that one is stored."""
    alice = people["alice"]
    room_id = await evil_member(world, evil, alice)
    m = [evil.event(room_id, "message", {"body": f"e{i}"}) for i in range(4)]
    second = await send_after(evil, world, m[2:], after=m[1])
    assert {e: r["error"]["code"] for e, r in second.items()} == {
        m[2]["event_id"]: "SW_FED_OUT_OF_ORDER", m[3]["event_id"]: "SW_FED_OUT_OF_ORDER"}
    assert all(r["error"]["transient"] is True for r in second.values())
    assert await alice.bodies(room_id) == []
    assert await send_after(evil, world, m[:2], after=None) == {
        m[0]["event_id"]: {"seq": 4}, m[1]["event_id"]: {"seq": 5}}
    assert await send_after(evil, world, m[2:], after=m[1]) == {
        m[2]["event_id"]: {"seq": 6}, m[3]["event_id"]: {"seq": 7}}
    assert await alice.bodies(room_id) == ["e0", "e1", "e2", "e3"]
    # a refused event is answered for too: what follows it is taken
    stranger = evil.event(room_id, "message", {"body": "not mine"},
                          sender="@eve:evil.test")
    assert "error" in (await send_after(evil, world, [stranger], None))[stranger["event_id"]]
    last = evil.event(room_id, "message", {"body": "e4"})
    assert await send_after(evil, world, [last], after=stranger) == {
        last["event_id"]: {"seq": 8}}


async def test_a_reply_or_reaction_never_goes_before_its_target(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """At the host, a reply or reaction whose target the room does not hold is refused for
    good (everything its origin sent before has been answered for); after the target, it
    is taken. At 9b66531 both were ordered, pointing at nothing."""
    alice = people["alice"]
    room_id = await evil_member(world, evil, alice)
    target = evil.event(room_id, "message", {"body": "target"})
    reply = evil.event(room_id, "message", {"body": "reply", "in_reply_to":
                                            target["event_id"]})
    reaction = evil.event(room_id, "reaction", {"relates_to": target["event_id"],
                                                "key": "+1"})
    early = await send_after(evil, world, [reply, reaction], None)
    assert {r["error"]["code"] for r in early.values()} == {"SW_FED_TARGET_NOT_FOUND"}
    assert not any(r["error"].get("transient") for r in early.values())
    later = [evil.event(room_id, "message", {"body": "reply", "in_reply_to":
                                             target["event_id"]}),
             evil.event(room_id, "reaction", {"relates_to": target["event_id"], "key": "+1"})]
    got = await send_after(evil, world, [target, *later], None)
    assert [got[e["event_id"]] for e in [target, *later]] == [{"seq": 4}, {"seq": 5},
                                                             {"seq": 6}]
    assert [e["type"] for e in await alice.events(room_id)][-3:] == [
        "message", "message", "reaction"]


async def test_the_second_send_in_flight_names_the_last_event_of_the_first(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    """The sender's side: behind, a queue has two /send in flight; the second carries
    ``after``, the first's last event, and the first none."""
    alice, root = people["alice"], people["root_a"]
    room_id = await evil_member(world, evil, alice)
    up = trio.Event()
    bodies: list[dict[str, Any]] = []

    async def send(method: str, path: str, body: Any) -> tuple[int, bytes]:
        if not up.is_set():
            return 503, b'{"error": {"code": "SW_UNAVAILABLE", "message": "down"}}'
        bodies.append(body)
        return ok_send(method, path, body)

    evil.answer(FED + "/send", send)
    posted = [await alice.post(room_id, f"m{i}") for i in range(250)]

    async def backed_off() -> bool:
        r = await root.call("GET", "/v1/admin/federation/peers")
        return any(p["server_name"] == "evil.test" and p["failures"] >= 1
                   for p in r.json()["data"])

    await wait_for(backed_off, what="the queue to back off while evil is down")
    up.set()
    await root.ok("POST", "/v1/admin/federation/peers/evil.test/retry")

    async def all_sent() -> bool:
        return {e["event_id"] for b in bodies for e in b["events"]} >= set(posted)

    await wait_for(all_sent, timeout=60, what="every event sent to evil.test")
    # Two in flight reach evil.test on two connections, in either order: what is
    # checked is what each names, not which arrived first.
    order = {event_id: i for i, event_id in enumerate(posted)}
    first = min(bodies, key=lambda b: order.get(b["events"][0]["event_id"], len(order)))
    assert "after" not in first
    pipelined = [b for b in bodies if "after" in b]
    assert pipelined, "no second /send in flight"
    for body in pipelined:
        before = next(b for b in bodies if b["events"][-1]["event_id"]
                      == body["after"]["event_id"])
        assert body["after"]["room_id"] == room_id
        assert (order.get(before["events"][-1]["event_id"], -1)
                < order.get(body["events"][0]["event_id"], len(order)))
