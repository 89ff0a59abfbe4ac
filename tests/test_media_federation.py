"""Files across servers (issue 21): real TLS servers, and a hostile origin.

a.test hosts a room with bob of b.test. A file alice attaches is fetched by
b.test from a.test (the event's origin) with a signed request, checked
against the signed size and sha256, and served to bob; one bob attaches is
fetched by a.test from b.test. ``evil.test`` (tests/hostile.py) serves
other bytes than its signed event names, is down, or asks for a file it has
no member for: refused, nothing kept, audited.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from swfed.core.signing import generate_keypair
from tests.conftest import bearer
from tests.harness import free_port, wait_for
from tests.hostile import HostedRoom, HostilePeer
from tests.world import Person, World, open_policies, running_world

EVIL_PORT = free_port()
EVIL_KEY = generate_keypair()
FED = "/_scaiwave/federation/v1"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
PDF = b"%PDF-1.4\n" + os.urandom(200_000) + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("fedmedia"), {"evil.test": EVIL_PORT}) as w:
        yield w


@pytest.fixture
async def evil(world: World) -> AsyncIterator[HostilePeer]:
    peer = HostilePeer(world.net, "evil.test", EVIL_PORT, EVIL_KEY)
    async with peer.serving():
        yield peer


@pytest.fixture
async def people(world: World) -> AsyncIterator[dict[str, Person]]:
    async with world.clients() as clients:
        await open_policies(world, clients)
        yield {"alice": Person(world, clients, "a.test", "alice"),
               "bob": Person(world, clients, "b.test", "bob"),
               "dave": Person(world, clients, "b.test", "dave"),
               "root_a": Person(world, clients, "a.test", "root"),
               "root_b": Person(world, clients, "b.test", "root")}


async def upload(person: Person, data: bytes, content_type: str) -> dict[str, Any]:
    r = await person.http.post("/v1/media", content=data, headers={
        **bearer(person.token), "Content-Type": content_type})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def get_media(person: Person, media_id: str) -> Any:
    return await person.http.get(f"/v1/media/{media_id}", headers=bearer(person.token))


async def test_files_go_both_ways(world: World, people: dict[str, Person]) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    room_id = await alice.new_room("files")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    png, pdf = await upload(alice, PNG, "image/png"), await upload(alice, PDF, "application/pdf")
    event_id = (await alice.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "body": "two files", "attachments": [
            {"media_id": png["media_id"], "name": "pic.png", "width": 40, "height": 30},
            {"media_id": pdf["media_id"], "name": "paper.pdf"}]}))["event_id"]
    seen = await wait_for(lambda: bob.event(room_id, event_id), what="the message at b.test")
    assert [a["sha256"] for a in seen["content"]["attachments"]] == [png["sha256"],
                                                                     pdf["sha256"]]
    # b.test fetches them as soon as the message is stored, before anyone asks
    media_b = world.b.root / "data" / "media"
    await wait_for(lambda: all((media_b / m["sha256"][:2] / m["sha256"]).exists()
                               for m in (png, pdf)), what="b.test to fetch both files")
    r = await get_media(bob, png["media_id"])
    assert r.status_code == 200, r.text
    assert r.content == PNG and r.headers["content-disposition"] == "inline"
    r = await get_media(bob, pdf["media_id"])
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == pdf["sha256"]
    assert r.headers["content-disposition"] == "attachment"
    # dave of b.test is not in the room
    r = await get_media(dave, pdf["media_id"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_MEDIA_NOT_FOUND"

    # bob's file, posted from the member server: the host fetches it from b.test
    mine = await upload(bob, b"GIF89a" + os.urandom(3000), "image/gif")
    event_id = (await bob.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "attachments": [{"media_id": mine["media_id"], "name": "anim.gif"}]}))["event_id"]
    await wait_for(lambda: alice.event(room_id, event_id), what="bob's message at a.test")
    r = await get_media(alice, mine["media_id"])
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == mine["sha256"]


async def test_a_non_member_server_may_not_fetch(world: World, evil: HostilePeer,
                                                 people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    room_id = await alice.new_room("private files")
    await bob.accept(room_id, await alice.invite(room_id, bob))
    pdf = await upload(alice, PDF, "application/pdf")
    await alice.ok("POST", f"/v1/rooms/{room_id}/messages", {
        "attachments": [{"media_id": pdf["media_id"], "name": "secret.pdf"}]})
    for media_id in (pdf["media_id"], "X" * 24):
        r = await evil.request(world.a, "GET", f"{FED}/media/{media_id}")
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "SW_FED_MEDIA_FORBIDDEN"
        assert PDF[:100] not in r.content
    r = await people["root_a"].call("GET", "/v1/admin/audit?peer=evil.test")
    assert any(row["reason"] == "SW_FED_MEDIA_FORBIDDEN" for row in r.json()["data"])


def attachment(data: bytes, media_id: str, ctype: str = "application/pdf") -> dict[str, Any]:
    return {"media_id": media_id, "name": "f.bin", "content_type": ctype,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def evil_room_with_file(world: World, evil: HostilePeer, bob: Person, name: str,
                              data: bytes, media_id: str) -> HostedRoom:
    room = HostedRoom(evil, name)
    room.invite(bob.fqid)
    await room.deliver(world.b)
    await bob.accept(room.room_id)
    room.post("a file", attachments=[attachment(data, media_id)])
    await room.deliver(world.b)
    return room


async def test_an_origin_serving_other_bytes_is_refused(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    bob, root = people["bob"], people["root_b"]
    real = b"%PDF-1.4 the real one" + os.urandom(1000)
    other = b"%PDF-1.4 another one" + os.urandom(1000)
    media_id = "evilMediaOther0000000001"
    evil.answer(f"{FED}/media/", lambda method, path, body: (200, other))
    await evil_room_with_file(world, evil, bob, "lies", real, media_id)
    r = await get_media(bob, media_id)
    assert r.status_code == 503 and r.json()["error"]["code"] == "SW_MEDIA_NOT_YET_AVAILABLE"
    assert "Retry-After" in r.headers
    assert evil.count(f"{FED}/media/{media_id}") == 1
    media_dir = world.b.root / "data" / "media"
    for data in (real, other):
        sha = hashlib.sha256(data).hexdigest()
        assert not (media_dir / sha[:2] / sha).exists()
    assert not [p for p in (media_dir / "tmp").iterdir()]
    r = await root.call("GET", "/v1/admin/audit?action=federation.media.rejected")
    rows = [row for row in r.json()["data"] if row.get("peer") == "evil.test"]
    assert rows and rows[0]["reason"] == "SW_FED_MEDIA_MISMATCH"
    # asked again at once: the backoff holds, the origin is not asked again
    r = await get_media(bob, media_id)
    assert r.status_code == 503 and evil.count(f"{FED}/media/{media_id}") == 1


async def test_an_origin_that_is_down_is_tried_again(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    bob = people["bob"]
    data = b"%PDF-1.4 later" + os.urandom(2000)
    media_id = "evilMediaLater0000000001"
    up = {"now": False}

    def serve(method: str, path: str, body: Any) -> tuple[int, bytes]:
        if not up["now"]:
            return 503, json.dumps({"error": {"code": "SW_UNAVAILABLE",
                                              "message": "rebooting"}}).encode()
        return 200, data

    evil.answer(f"{FED}/media/", serve)
    await evil_room_with_file(world, evil, bob, "later", data, media_id)
    r = await get_media(bob, media_id)
    assert r.status_code == 503 and r.json()["error"]["code"] == "SW_MEDIA_NOT_YET_AVAILABLE"
    up["now"] = True

    async def fetched() -> bool:
        r = await get_media(bob, media_id)
        return r.status_code == 200 and r.content == data
    await wait_for(fetched, timeout=30, interval=0.5, what="the file once the origin is up")


async def test_an_origin_sending_more_than_the_signed_size_is_cut_off(
        world: World, evil: HostilePeer, people: dict[str, Person]) -> None:
    bob = people["bob"]
    real = b"%PDF-1.4 small" + os.urandom(500)
    media_id = "evilMediaHuge00000000001"
    evil.answer(f"{FED}/media/", lambda method, path, body: (200, real + os.urandom(2_000_000)))
    await evil_room_with_file(world, evil, bob, "huge", real, media_id)
    await wait_for(lambda: evil.count(f"{FED}/media/{media_id}") >= 1,
                   what="b.test's fetch from evil.test")
    r = await get_media(bob, media_id)
    assert r.status_code == 503 and r.json()["error"]["code"] == "SW_MEDIA_NOT_YET_AVAILABLE"
    media_dir = world.b.root / "data" / "media"
    sha = hashlib.sha256(real).hexdigest()
    assert not (media_dir / sha[:2] / sha).exists()
    assert not [p for p in (media_dir / "tmp").iterdir()]
