"""Calls on the host's LiveKit: tokens for local and foreign members.

a.test hosts the room and has [calls] set up; b.test has none. Both
servers' members must get tokens for a.test's LiveKit, signed with a.test's
secret, for the same LiveKit room. PyJWT checks our tokens.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from swfed.config import ConfigError, load_config
from swfed.core.canonical import encode_canonical_json
from swfed.core.livekit import access_token, livekit_room_name
from swfed.core.signing import sign_request
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for
from tests.test_federation import accept_invite
from tests.test_federation_policy import shared_room
from tests.test_federation_refusals import a_key as signing_key_of

SECRET = "a-test-livekit-secret-of-enough-length"
CALLS = {"livekit_url": "wss://livekit.a.test", "livekit_api_key": "APIa",
         "livekit_api_secret": SECRET, "token_ttl_seconds": 300}
Setup = tuple[TlsNet, ServerProcess, ServerProcess]


def test_token_verifies_with_pyjwt() -> None:
    token = access_token(api_key="APIk", api_secret=SECRET, identity="@bob:b.test",
                         name="Bob", room="sw-room", now_s=1_800_000_000, ttl_s=600)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"],
                        options={"verify_exp": False, "verify_nbf": False})
    assert claims == {"iss": "APIk", "sub": "@bob:b.test", "name": "Bob",
                      "nbf": 1_800_000_000, "exp": 1_800_000_600,
                      "video": {"room": "sw-room", "roomJoin": True, "canPublish": True,
                                "canSubscribe": True, "canPublishData": True}}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-of-enough-length!", algorithms=["HS256"],
                   options={"verify_exp": False})
    with pytest.raises(ValueError):
        access_token(api_key="", api_secret=SECRET, identity="x", name="x", room="r",
                     now_s=0, ttl_s=60)


def test_room_names() -> None:
    assert livekit_room_name("!abc123:chat.example.com:8448") == "sw-abc123-chat.example.com-8448"
    assert livekit_room_name("![x]/y") == "sw--x--y"
    # the same on every server, and one LiveKit room per swfed room
    assert livekit_room_name("!abc123:a.test") == livekit_room_name("!abc123:a.test")
    assert livekit_room_name("!abc123:a.test") != livekit_room_name("!abc124:a.test")


@pytest.mark.parametrize(("table", "expected"), [
    ('livekit_url = "wss://lk"\n', "[calls] livekit_api_key: required"),
    ('livekit_url = "ftp://lk"\n', "[calls] livekit_url"),
    ('token_ttl_seconds = 5\n', "[calls] token_ttl_seconds"),
    ('livekit_url = "wss://lk"\nlivekit_api_key = "k"\n',
     "[calls] livekit_api_secret: required when livekit_url is set"),
    ('livekit_url = "wss://"\n', "[calls] livekit_url: expected the LiveKit server's URL"),
    ('livekit_url = 3\n', "[calls] livekit_url: expected a string, got integer 3"),
    ('token_ttl_seconds = "600"\n', "[calls] token_ttl_seconds: expected an integer"),
    ('token_ttl_seconds = 86401\n', "[calls] token_ttl_seconds: expected a number >= 60"),
    ('livekit_secret = "x"\n', "[calls] livekit_secret: unknown key (did you mean "
                                "livekit_api_secret?)"),
    # a secret of the wrong type is not echoed
    ('livekit_api_secret = 918273645\n', "[calls] livekit_api_secret: expected a string in "
                                         "quotes, got integer (value not shown)"),
])
def test_calls_config_errors(tmp_path: Path, table: str, expected: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\nname = "a"\n[calls]\n' + table)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert "918273645" not in str(info.value)


def test_calls_config(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\nname = "a"\n[call]\n')
    with pytest.raises(ConfigError, match=r"\[call\]: unknown table \(did you mean calls\?\)"):
        load_config(path, env={})
    path.write_text('[server]\nname = "a"\n[calls]\nlivekit_url = "https://lk.a.test"\n'
                    f'livekit_api_key = "k"\nlivekit_api_secret = "{SECRET}"\n')
    calls = load_config(path, env={}).calls
    assert calls.enabled and calls.token_ttl_seconds == 600
    assert SECRET not in repr(calls)
    shipped = load_config(Path(__file__).parent.parent / "conf" / "server.toml", env={}).calls
    assert not shipped.enabled  # the shipped config has calls off


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("calls"), ["a.test", "b.test"],
                                    extra={"a.test": {"calls": CALLS}})
    with running(a, b):
        yield net, a, b


@pytest.fixture(scope="module")
def users(setup: Setup) -> dict[str, str]:
    _, a, b = setup
    return {"admin_a": a.create_user("root", admin=True), "alice": a.create_user("alice"),
            "admin_b": b.create_user("root", admin=True), "bob": b.create_user("bob"),
            "carol": b.create_user("carol")}


@pytest.fixture
async def clients(setup: Setup, users: dict[str, str]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    net, a, b = setup
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        for client, admin, peer in ((ca, users["admin_a"], "b.test"),
                                    (cb, users["admin_b"], "a.test")):
            r = await client.put("/v1/admin/federation/policy", headers=bearer(admin),
                                 json={"allowed_peers": [peer]})
            assert r.status_code == 200
        yield ca, cb


def claims_of(answer: dict[str, Any]) -> dict[str, Any]:
    claims = dict(jwt.decode(answer["token"], SECRET, algorithms=["HS256"]))
    expires = calendar.timegm(time.strptime(answer["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert claims["exp"] == expires and claims["exp"] - claims["nbf"] == 300
    return claims


async def fed_call(setup: Setup, room_id: str, body: dict[str, Any]) -> httpx.Response:
    """b.test's own signed request to a.test, as its server would send it."""
    net, a, b = setup
    uri = f"/_scaiwave/federation/v1/rooms/{room_id}/call"
    headers = {"Host": "a.test", "Content-Type": "application/json",
               "Authorization": sign_request(method="POST", uri=uri, origin="b.test",
                                             destination="a.test",
                                             ts_ms=int(time.time() * 1000), content=body,
                                             keypair=signing_key_of(b))}
    async with httpx.AsyncClient(verify=net.ssl_context(), timeout=20) as c:
        return await c.post(a.url + uri,
                            content=encode_canonical_json(body), headers=headers)


def code_of(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, str(r.json()["error"]["code"])


async def test_local_and_foreign_members_meet_on_the_hosts_livekit(
        setup: Setup, clients: Any, users: dict[str, str]) -> None:
    _, a, b = setup
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["alice"]))
    assert r.status_code == 200, r.text
    alice = r.json()
    assert set(alice) == {"room_id", "host", "livekit_url", "livekit_room", "token", "identity",
                          "expires_at"}
    assert alice["livekit_url"] == "wss://livekit.a.test" and alice["host"] == "a.test"
    assert alice["identity"] == "@alice:a.test" and alice["room_id"] == room_id
    claims = claims_of(alice)  # signed with a.test's secret, valid 300 s from now
    assert claims["iss"] == "APIa" and claims["sub"] == "@alice:a.test"
    assert claims["video"]["room"] == alice["livekit_room"] == livekit_room_name(room_id)
    assert claims["video"]["roomJoin"] is True
    assert abs(claims["nbf"] - time.time()) < 60

    # bob's own server has no LiveKit: his token comes from the host
    r = await cb.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["bob"]))
    assert r.status_code == 200, r.text
    bob = r.json()
    assert set(bob) == set(alice)
    assert bob["livekit_url"] == "wss://livekit.a.test" and bob["host"] == "a.test"
    assert bob["livekit_room"] == alice["livekit_room"] and bob["identity"] == "@bob:b.test"
    claims = claims_of(bob)  # signed with a.test's secret
    assert claims["iss"] == "APIa" and claims["sub"] == "@bob:b.test" and claims["name"] == "bob"
    assert claims["video"]["room"] == alice["livekit_room"]
    assert claims["video"]["roomJoin"] is True

    # both servers log the token they hand out, never the token itself
    def issued(server: ServerProcess, identity: str) -> list[dict[str, Any]]:
        return [line for line in server.logs("call.token_issued")
                if line.get("room_id") == room_id and line.get("identity") == identity]

    # (the harness reads each server's log in a thread: wait for the lines)
    await wait_for(lambda: issued(a, "@bob:b.test") and issued(b, "@bob:b.test"),
                   what="call.token_issued on both servers")
    assert [(x["tenant"], x["host"]) for x in issued(a, "@bob:b.test")] == [("a.test", "a.test")]
    assert [(x["tenant"], x["host"]) for x in issued(b, "@bob:b.test")] == [("b.test", "a.test")]
    for server in (a, b):
        assert all(SECRET not in line and bob["token"] not in line and alice["token"] not in line
                   for line in server.log_lines)


async def test_refusals(setup: Setup, clients: Any, users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    # carol (b.test) is not in the room
    r = await cb.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["carol"]))
    assert code_of(r) == (404, "SW_ROOM_NOT_FOUND")
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["admin_a"]))
    assert code_of(r) == (404, "SW_ROOM_NOT_FOUND")
    r = await ca.post(f"/v1/rooms/{room_id}/call")
    assert r.status_code == 401
    # a room hosted by b.test, which has no [calls]
    r = await cb.post("/v1/rooms", json={"name": "b's"}, headers=bearer(users["bob"]))
    r = await cb.post(f"/v1/rooms/{r.json()['room_id']}/call", headers=bearer(users["bob"]))
    assert code_of(r) == (503, "SW_CALLS_NOT_CONFIGURED")
    assert "livekit_url, livekit_api_key and livekit_api_secret" in r.json()["error"]["message"]


async def test_the_host_refuses_over_federation(setup: Setup, clients: Any,
                                                users: dict[str, str]) -> None:
    """What a.test answers b.test's signed requests, including ones b.test would not send."""
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    r = await fed_call(setup, room_id, {"user": "@bob:b.test"})
    assert r.status_code == 200, r.text
    assert claims_of(r.json())["sub"] == "@bob:b.test"
    # only for b.test's own users, named by fqid
    for user in ("@alice:a.test", "@mallory:c.test", "bob", 7, None):
        r = await fed_call(setup, room_id, {"user": user})
        assert code_of(r) == (400, "SW_FED_BAD_REQUEST"), user
    # a user of b.test who has not joined, a room that does not exist
    r = await fed_call(setup, room_id, {"user": "@carol:b.test"})
    assert code_of(r) == (403, "SW_FED_NOT_MEMBER")
    r = await fed_call(setup, "!nosuchroom:a.test", {"user": "@bob:b.test"})
    assert code_of(r) == (403, "SW_FED_NOT_MEMBER")
    # the host switches the room's federation off: bob's server is refused, alice still calls
    r = await ca.patch(f"/v1/rooms/{room_id}", json={"federate": False},
                       headers=bearer(users["alice"]))
    assert r.status_code == 200, r.text
    r = await cb.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["bob"]))
    assert code_of(r) == (403, "SW_FED_ROOM_NOT_FEDERATED")
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["alice"]))
    assert r.status_code == 200, r.text


async def test_a_host_without_livekit(clients: Any, users: dict[str, str]) -> None:
    """alice (a.test, which has LiveKit) in a room b.test hosts: b.test has no [calls]."""
    ca, cb = clients
    r = await cb.post("/v1/rooms", json={"name": "hosted by b", "federate": True},
                      headers=bearer(users["bob"]))
    room_id = r.json()["room_id"]
    r = await cb.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@alice:a.test"},
                      headers=bearer(users["bob"]))
    assert r.status_code == 201, r.text
    await accept_invite(ca, users["alice"], room_id)

    async def alice_joined_on_b() -> bool:
        r = await cb.get(f"/v1/rooms/{room_id}/members", headers=bearer(users["bob"]))
        return any(m["id"] == "@alice:a.test" and m["membership"] == "join"
                   for m in r.json()["data"])

    await wait_for(alice_joined_on_b, what="alice joined on b.test")
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["alice"]))
    assert code_of(r) == (503, "SW_CALLS_NOT_CONFIGURED")
    assert "b.test" in r.json()["error"]["message"]
