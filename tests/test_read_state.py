"""Read state on the server (issue 20): read markers, unread and mention counts, seen
notifications, and the stream telling every device of the user.

Two real processes (tests/world.py): alice on a.test hosts the room, bob reads
it on b.test; his read state lives on his own server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from tests.conftest import bearer
from tests.harness import running, wait_for
from tests.test_stream import sse
from tests.world import Person, World, make_world, open_policies


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("reads"))
    with running(w.a, w.b):
        yield w


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob")}


async def my_room(person: Person, room_id: str) -> dict[str, Any]:
    rooms = (await person.ok("GET", "/v1/me/rooms"))["data"]
    return next(r for r in rooms if r["room_id"] == room_id)


async def stream_items(person: Person, after: int, kind: str,
                       n: int) -> list[dict[str, Any]]:
    """The first ``n`` stream items of ``kind`` after position ``after`` (a device that
    was away since then, resuming)."""
    out: list[dict[str, Any]] = []
    with trio.fail_after(15):
        async with person.http.stream("GET", "/v1/me/stream", headers={
                **bearer(person.token), "Last-Event-ID": str(after)}) as r:
            assert r.status_code == 200
            async for item in sse(r):
                if item.get("event") == kind:
                    out.append(item)
                    if len(out) == n:
                        return out
    return out


async def head(person: Person) -> int:
    """The stream position now (the newest id the stream has given)."""
    with trio.fail_after(15):
        async with person.http.stream("GET", "/v1/me/stream", headers={
                **bearer(person.token), "Last-Event-ID": "0"}) as r:
            last = 0
            with trio.move_on_after(1):
                async for item in sse(r):
                    last = max(last, int(item["id"]))
    return last


async def test_unread_mentions_and_read_markers_live_on_the_users_server(
        world: World, people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("reads")
    await alice.invite(room_id, bob)
    await bob.accept(room_id)
    joined = await my_room(bob, room_id)
    assert {k: joined[k] for k in ("unread", "mentions")} == {"unread": 0, "mentions": 0}
    ids = [await alice.post(room_id, f"news {i}") for i in range(2)]
    ids.append((await alice.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "body": "hey bob", "mentions": [bob.fqid]}))["event_id"])

    async def counted() -> bool:
        room = await my_room(bob, room_id)
        return room["unread"] == 3 and room["mentions"] == 1

    await wait_for(counted, what="bob's unread and mention counts")
    room = await my_room(bob, room_id)
    assert room["last_activity"] > 0 and room["read_seq"] == 0
    mention = next(n for n in await bob.notifications() if n["type"] == "mention")
    assert mention["seen"] is False
    before = await head(bob)

    # bob reads up to the second message: one unread left, the mention too
    second = await bob.event(room_id, ids[1])
    assert second is not None
    state = await bob.ok("POST", f"/v1/rooms/{room_id}/read", {"event_id": ids[1]})
    assert state["read_seq"] == second["seq"] and state["unread"] == 1
    assert state["mentions"] == 1
    # a marker never moves back
    again = await bob.ok("POST", f"/v1/rooms/{room_id}/read", {"seq": 1})
    assert again["read_seq"] == second["seq"]
    # then all of it: no mention left to read (the notification is the bell's: unseen)
    last = await bob.event(room_id, ids[2])
    assert last is not None
    state = await bob.ok("POST", f"/v1/rooms/{room_id}/read", {"seq": last["seq"] + 1000})
    assert state["read_seq"] == last["seq"]  # not past what the room holds
    assert state["unread"] == 0 and state["mentions"] == 0
    assert next(n for n in await bob.notifications()
                if n["notification_id"] == mention["notification_id"])["seen"] is False
    await bob.ok("POST", "/v1/me/notifications/seen", {})
    # another device of bob's, resuming its stream, hears where the marker is now and
    # that the notifications were seen
    reads = await stream_items(bob, before, "read", 1)
    assert [i["data"] for i in reads] == [{"room_id": room_id, "read_seq": last["seq"]}]
    seen = await stream_items(bob, before, "notification", 2)  # the invite's, the mention's
    again = [i["data"] for i in seen if i["data"]["notification_id"] == (
        mention["notification_id"])]
    assert again and again[0]["seen"] is True
    # alice's own count is hers: her own messages are never unread
    assert (await my_room(alice, room_id))["unread"] == 0


async def test_notifications_marked_seen(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("seen")
    await alice.invite(room_id, bob)
    invite_id = await bob.invite_to(room_id)
    note = next(n for n in await bob.notifications() if n.get("invite_id") == invite_id)
    assert note["seen"] is False
    assert (await bob.ok("POST", "/v1/me/notifications/seen",
                         {"notification_ids": [note["notification_id"]]}))["seen"] == 1
    assert (await bob.ok("POST", "/v1/me/notifications/seen", {
        "notification_ids": [note["notification_id"]]}))["seen"] == 0
    await bob.ok("POST", "/v1/me/notifications/seen", {})
    assert all(n["seen"] for n in await bob.notifications())


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 400, "SW_MISSING_FIELD"),
    ({"seq": 1, "event_id": "00000000-0000-4000-8000-000000000000"}, 400, "SW_MISSING_FIELD"),
    ({"seq": -1}, 400, "SW_BAD_VALUE"),
    ({"seq": "1"}, 400, "SW_BAD_TYPE"),
    ({"event_id": "x"}, 400, "SW_BAD_VALUE"),
    ({"event_id": "00000000-0000-4000-8000-000000000000"}, 404, "SW_EVENT_NOT_FOUND"),
    ({"seq": 1, "other": 1}, 400, "SW_UNKNOWN_FIELD"),
])
async def test_bad_read_requests(people: dict[str, Person], body: dict[str, Any],
                                 status: int, code: str) -> None:
    alice = people["alice"]
    room_id = await alice.new_room("bad reads")
    r = await alice.call("POST", f"/v1/rooms/{room_id}/read", body)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    r = await alice.call("POST", "/v1/rooms/!nosuchroom:a.test/read", {"seq": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"


async def test_every_room_in_the_list_carries_its_read_state(
        people: dict[str, Person]) -> None:
    alice = people["alice"]
    for i in range(5):
        await alice.post(await alice.new_room(f"many {i}"), "hello")
    rooms = (await alice.ok("GET", "/v1/me/rooms"))["data"]
    assert all({"unread", "mentions", "read_seq", "last_activity"} <= set(r) for r in rooms)

