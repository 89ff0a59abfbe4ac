"""Bad input always gets the error shape with a stable code, never a 500."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import bearer
from tests.harness import ServerProcess


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    return server.create_user("errtester")


@pytest.fixture(scope="module")
def room(server: ServerProcess, token: str) -> str:
    r = httpx.post(server.url + "/v1/rooms", json={"name": "errors"}, headers=bearer(token))
    return str(r.json()["room_id"])


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize(("content", "code"), [
    (b"{not json", "SW_BAD_JSON"),
    (b"[1, 2]", "SW_BAD_JSON"),
    (b"", "SW_BAD_JSON"),
    (b'{"body": NaN}', "SW_BAD_JSON"),
    (b'{"body": 1.5}', "SW_BAD_JSON"),
    (b"\xff\xfe", "SW_BAD_JSON"),
    (b'{"body": 5}', "SW_BAD_TYPE"),
    (b'{"body": ""}', "SW_BAD_VALUE"),
    (b'{}', "SW_MISSING_FIELD"),
    (b'{"body": "x", "color": "red"}', "SW_UNKNOWN_FIELD"),
    (b'{"body": "x", "mentions": "@bob"}', "SW_BAD_TYPE"),
    (b'{"body": "x", "mentions": ["bob"]}', "SW_BAD_ID"),
    (b'{"body": "x", "in_reply_to": "nope"}', "SW_BAD_VALUE"),
])
async def test_bad_message_bodies(client: httpx.AsyncClient, token: str, room: str,
                                  content: bytes, code: str) -> None:
    r = await client.post(f"/v1/rooms/{room}/messages", content=content, headers=bearer(token))
    assert_error(r, 400, code)


@pytest.mark.parametrize(("body", "code"), [
    ({"name": 3}, "SW_BAD_TYPE"),
    ({"name": "x", "type": "castle"}, "SW_BAD_VALUE"),
    ({"name": "x", "federate": "yes"}, "SW_BAD_TYPE"),
    ({"name": "x", "federate": 1}, "SW_BAD_TYPE"),
    ({"name": "x" * 201}, "SW_BAD_VALUE"),
])
async def test_bad_room_bodies(client: httpx.AsyncClient, token: str, body: object,
                               code: str) -> None:
    r = await client.post("/v1/rooms", json=body, headers=bearer(token))
    assert_error(r, 400, code)


async def test_auth_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/me"), 401, "SW_UNAUTHORIZED")
    assert_error(await client.get("/v1/me", headers={"Authorization": "Basic abc"}), 401,
                 "SW_UNAUTHORIZED")
    assert_error(await client.get("/v1/me", headers=bearer("swt_nope")), 401, "SW_BAD_TOKEN")


async def test_unknown_things(client: httpx.AsyncClient, token: str, room: str) -> None:
    assert_error(await client.get("/v1/rooms/!nosuchroomatall:localhost", headers=bearer(token)),
                 404, "SW_ROOM_NOT_FOUND")
    assert_error(await client.post("/v1/rooms/!nosuchroomatall:localhost/messages",
                                   json={"body": "x"}, headers=bearer(token)),
                 404, "SW_ROOM_NOT_FOUND")
    assert_error(await client.post(f"/v1/rooms/{room}/invites", json={"fqid": "@ghost"},
                                   headers=bearer(token)), 404, "SW_USER_NOT_FOUND")
    assert_error(await client.post(
        f"/v1/rooms/{room}/messages/00000000-0000-4000-8000-000000000000/reactions",
        json={"key": "x"}, headers=bearer(token)), 404, "SW_EVENT_NOT_FOUND")
    assert_error(await client.get("/v1/nothing-here"), 404, "SW_NOT_FOUND")
    assert_error(await client.delete("/v1/me", headers=bearer(token)), 405,
                 "SW_METHOD_NOT_ALLOWED")
    assert_error(await client.get(f"/v1/rooms/{room}/messages", params={"limit": "lots"},
                                  headers=bearer(token)), 400, "SW_BAD_PARAM")
    assert_error(await client.get(f"/v1/rooms/{room}/messages", params={"limit": 0},
                                  headers=bearer(token)), 400, "SW_BAD_PARAM")
    assert_error(await client.get("/v1/me/stream", headers={**bearer(token),
                                                            "Last-Event-ID": "abc"}),
                 400, "SW_BAD_PARAM")


async def test_oversized_body(client: httpx.AsyncClient, token: str, room: str) -> None:
    big = b'{"body": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await client.post(f"/v1/rooms/{room}/messages", content=big, headers=bearer(token))
    assert_error(r, 413, "SW_REQUEST_TOO_LARGE")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_bodies_never_500(server: ServerProcess, token: str, room: str,
                                 data: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for path in ("/v1/rooms", f"/v1/rooms/{room}/messages", f"/v1/rooms/{room}/invites"):
            r = c.post(path, content=data, headers=bearer(token))
            assert r.status_code < 500, (path, data, r.text)
            if r.status_code >= 400:
                assert r.json()["error"]["code"].startswith("SW_")
