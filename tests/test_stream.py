"""``GET /v1/me/stream``: live events and notifications, resumable without gaps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import bearer
from tests.harness import ServerProcess


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    return {"ann": server.create_user("ann"), "ben": server.create_user("ben")}


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE response into {id, event, data} dicts."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                yield current
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            current[field] = json.loads(value) if field == "data" else value


async def take(it: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out = []
    with trio.fail_after(10):
        async for item in it:
            out.append(item)
            if len(out) == n:
                break
    return out


async def test_stream_and_resume(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    ann, ben = tokens["ann"], tokens["ben"]
    r = await client.post("/v1/rooms", json={"name": "live"}, headers=bearer(ann))
    room_id = r.json()["room_id"]

    async def post(body: str, mentions: list[str] | None = None) -> str:
        payload: dict[str, Any] = {"body": body}
        if mentions:
            payload["mentions"] = mentions
        r = await client.post(f"/v1/rooms/{room_id}/messages", json=payload, headers=bearer(ann))
        assert r.status_code == 201
        return str(r.json()["event_id"])

    async with client.stream("GET", "/v1/me/stream", headers=bearer(ben)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        items = sse(resp)
        # the stream starts now: the invite is the first thing ben sees
        r = await client.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@ben"},
                              headers=bearer(ann))
        invite_id = r.json()["invite_id"]
        [note] = await take(items, 1)
        assert note["event"] == "notification"
        assert note["data"]["type"] == "invite" and note["data"]["invite_id"] == invite_id
        await client.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(ben))
        first = await post("one")
        got = await take(items, 2)  # his join, then "one"
        assert got[0]["data"]["type"] == "member"
        assert got[1]["data"]["event_id"] == first
        last_id = got[1]["id"]

    # while ben is away: messages and a mention
    missed = [await post(f"missed {i}") for i in range(5)]
    mention = await post("ben, look", mentions=["@ben"])

    async with client.stream("GET", "/v1/me/stream",
                             headers={**bearer(ben), "Last-Event-ID": last_id}) as resp:
        got = await take(sse(resp), 7)
    ids = [int(g["id"]) for g in got]
    assert ids == sorted(ids) and len(set(ids)) == 7 and ids[0] > int(last_id)
    events = [g["data"]["event_id"] for g in got if g["event"] == "event"]
    assert events == [*missed, mention]
    notes = [g["data"] for g in got if g["event"] == "notification"]
    assert [(n["type"], n["event_id"]) for n in notes] == [("mention", mention)]


async def test_stream_requires_auth(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/me/stream")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "SW_UNAUTHORIZED"
