"""The local chat API on one real server: rooms, messages, notifications, search."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess


@pytest.fixture(scope="module")
def people(server: ServerProcess) -> dict[str, str]:
    return {name: server.create_user(name, admin=(name == "alice"))
            for name in ("alice", "bob", "carol")}


async def make_room(client: httpx.AsyncClient, token: str, **body: Any) -> str:
    r = await client.post("/v1/rooms", json={"name": "general", **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return str(r.json()["room_id"])


async def invite_and_join(client: httpx.AsyncClient, room_id: str, inviter: str,
                          invitee_id: str, invitee_token: str) -> None:
    r = await client.post(f"/v1/rooms/{room_id}/invites", json={"fqid": invitee_id},
                          headers=bearer(inviter))
    assert r.status_code == 201, r.text
    invite_id = r.json()["invite_id"]
    r = await client.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(invitee_token))
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room_id}


async def test_me(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    r = await client.get("/v1/me", headers=bearer(people["alice"]))
    assert r.status_code == 200
    assert r.json() == {"id": "@alice", "fqid": "@alice:localhost", "display_name": "alice",
                        "admin": True, "server_name": "localhost"}
    r = await client.get("/v1/me", headers=bearer(people["bob"]))
    assert r.json()["admin"] is False


async def test_room_lifecycle(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await make_room(client, alice, name="lifecycle")
    assert room_id.startswith("!") and room_id.endswith(":localhost")

    r = await client.get(f"/v1/rooms/{room_id}", headers=bearer(alice))
    assert r.json() == {"room_id": room_id, "name": "lifecycle", "type": "standard",
                        "federate": False, "federated": False, "host": "localhost"}

    # bob is not in it yet: the room does not exist for him
    r = await client.get(f"/v1/rooms/{room_id}", headers=bearer(bob))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"

    r = await client.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob"},
                          headers=bearer(alice))
    assert r.status_code == 201
    invite_id = r.json()["invite_id"]
    # inviting twice while pending gives the same invite
    r2 = await client.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:localhost"},
                           headers=bearer(alice))
    assert r2.json()["invite_id"] == invite_id

    r = await client.get("/v1/me/notifications", headers=bearer(bob))
    invites = [n for n in r.json()["data"] if n.get("invite_id") == invite_id]
    assert len(invites) == 1
    assert invites[0]["type"] == "invite"
    assert invites[0]["room_id"] == room_id
    assert invites[0]["from"] == "@alice:localhost"

    r = await client.post(f"/v1/rooms/{room_id}/join", headers=bearer(bob))
    assert r.status_code == 200
    r = await client.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(bob))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "SW_INVITE_NOT_PENDING"

    r = await client.get(f"/v1/rooms/{room_id}/members", headers=bearer(bob))
    members = {m["id"]: m for m in r.json()["data"]}
    assert set(members) == {"@alice", "@bob"}
    assert members["@bob"] == {"id": "@bob", "fqid": "@bob:localhost", "foreign": False,
                               "display_name": "bob", "membership": "join"}

    r = await client.get("/v1/me/rooms", headers=bearer(bob))
    assert room_id in [room["room_id"] for room in r.json()["data"]]

    r = await client.post(f"/v1/rooms/{room_id}/leave", headers=bearer(bob))
    assert r.status_code == 200
    r = await client.get(f"/v1/rooms/{room_id}/messages", headers=bearer(bob))
    assert r.status_code == 404
    r = await client.get("/v1/me/rooms", headers=bearer(bob))
    assert room_id not in [room["room_id"] for room in r.json()["data"]]


async def test_decline(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    room_id = await make_room(client, people["alice"], name="declined")
    r = await client.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@carol"},
                          headers=bearer(people["alice"]))
    invite_id = r.json()["invite_id"]
    r = await client.post(f"/v1/me/invites/{invite_id}/decline", headers=bearer(people["carol"]))
    assert r.status_code == 200
    r = await client.get(f"/v1/rooms/{room_id}", headers=bearer(people["carol"]))
    assert r.status_code == 404
    # someone else's invite id is not yours to answer
    r = await client.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(people["bob"]))
    assert r.json()["error"]["code"] == "SW_INVITE_NOT_FOUND"


async def test_messages_replies_reactions_mentions(client: httpx.AsyncClient,
                                                    people: dict[str, str]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    room_id = await make_room(client, alice, name="chat")
    await invite_and_join(client, room_id, alice, "@bob", bob)

    r = await client.post(f"/v1/rooms/{room_id}/messages", json={"body": "hello bob"},
                          headers=bearer(alice))
    assert r.status_code == 201
    first = r.json()["event_id"]
    r = await client.post(f"/v1/rooms/{room_id}/messages",
                          json={"body": "hi @alice", "in_reply_to": first,
                                "mentions": ["@alice", "@carol"]},
                          headers=bearer(bob))
    assert r.status_code == 201
    reply = r.json()["event_id"]
    r = await client.post(f"/v1/rooms/{room_id}/messages/{first}/reactions",
                          json={"key": "👍"}, headers=bearer(bob))
    assert r.status_code == 201
    reaction = r.json()["event_id"]
    # the same reaction again is the same event: 200, nothing created
    r = await client.post(f"/v1/rooms/{room_id}/messages/{first}/reactions",
                          json={"key": "👍"}, headers=bearer(bob))
    assert r.status_code == 200 and r.json()["event_id"] == reaction

    r = await client.get(f"/v1/rooms/{room_id}/messages", headers=bearer(alice))
    events = r.json()["data"]
    assert [e["event_id"] for e in events[:3]] == [reaction, reply, first]
    assert events[1]["sender"] == "@bob:localhost"
    assert events[1]["content"] == {"body": "hi @alice", "in_reply_to": first,
                                    "mentions": ["@alice:localhost", "@carol:localhost"]}
    assert events[0]["content"] == {"relates_to": first, "key": "👍"}
    assert events[0]["type"] == "reaction"

    # a mention notifies alice (a member) but not carol (not in the room)
    r = await client.get("/v1/me/notifications", headers=bearer(alice))
    mentions = [n for n in r.json()["data"] if n["type"] == "mention"]
    assert mentions[0]["event_id"] == reply
    assert mentions[0]["room_id"] == room_id
    assert mentions[0]["from"] == "@bob:localhost"
    r = await client.get("/v1/me/notifications", headers=bearer(carol))
    assert all(n.get("event_id") != reply for n in r.json()["data"])

    # replying to an event that is not in the room
    r = await client.post(f"/v1/rooms/{room_id}/messages",
                          json={"body": "x", "in_reply_to": "00000000-0000-4000-8000-000000000000"},
                          headers=bearer(alice))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SW_EVENT_NOT_FOUND"


async def test_history_pages_backwards(client: httpx.AsyncClient,
                                       people: dict[str, str]) -> None:
    alice = people["alice"]
    room_id = await make_room(client, alice, name="paging")
    for i in range(12):
        r = await client.post(f"/v1/rooms/{room_id}/messages", json={"body": f"m{i}"},
                              headers=bearer(alice))
        assert r.status_code == 201
    bodies: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        r = await client.get(f"/v1/rooms/{room_id}/messages", params=params,
                             headers=bearer(alice))
        page = r.json()
        bodies += [e["content"]["body"] for e in page["data"] if e["type"] == "message"]
        if "next" not in page:
            break
        params = {"limit": 5, "before": page["next"]}
    assert bodies == [f"m{i}" for i in reversed(range(12))]


async def test_search(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    room_id = await make_room(client, alice, name="search")
    await invite_and_join(client, room_id, alice, "@bob", bob)
    await client.post(f"/v1/rooms/{room_id}/messages",
                      json={"body": "the quokka is a small marsupial"}, headers=bearer(alice))
    await client.post(f"/v1/rooms/{room_id}/messages",
                      json={"body": "Café au lait, s'il vous plaît"}, headers=bearer(bob))
    private = await make_room(client, carol, name="carol's")
    await client.post(f"/v1/rooms/{private}/messages",
                      json={"body": "a secret quokka plan"}, headers=bearer(carol))

    async def search(token: str, q: str) -> list[str]:
        r = await client.get("/v1/search", params={"q": q}, headers=bearer(token))
        assert r.status_code == 200, r.text
        return [e["content"]["body"] for e in r.json()["data"]]

    assert await search(bob, "quokka") == ["the quokka is a small marsupial"]
    assert await search(carol, "quokka") == ["a secret quokka plan"]
    assert await search(bob, "cafe") == ["Café au lait, s'il vous plaît"]
    assert await search(bob, "marsup*") == ["the quokka is a small marsupial"]
    # FTS5 syntax in user input is just text, never an error
    for q in ['"', "quokka OR", "NEAR(", "a AND (b", "col:quokka", "*", "^"]:
        r = await client.get("/v1/search", params={"q": q}, headers=bearer(bob))
        assert r.status_code in (200, 400), (q, r.text)
        if r.status_code == 400:
            assert r.json()["error"]["code"] == "SW_BAD_QUERY"
    r = await client.get("/v1/search", params={"q": ""}, headers=bearer(bob))
    assert r.json()["error"]["code"] == "SW_BAD_QUERY"
