"""Calls on the host's LiveKit: tokens for local and foreign members.

a.test hosts the room and has [calls] set up; b.test has none. Both
servers' members must get tokens for a.test's LiveKit, signed with a.test's
secret, for the same LiveKit room. PyJWT checks our tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from swfed.config import ConfigError, load_config
from swfed.core.livekit import access_token, livekit_room_name
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running
from tests.test_federation_policy import shared_room

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


@pytest.mark.parametrize(("table", "expected"), [
    ('livekit_url = "wss://lk"\n', "[calls] livekit_api_key: required"),
    ('livekit_url = "ftp://lk"\n', "[calls] livekit_url"),
    ('token_ttl_seconds = 5\n', "[calls] token_ttl_seconds"),
    ('livekit_secret = "x"\n', "did you mean livekit_api_secret?"),
])
def test_calls_config_errors(tmp_path: Path, table: str, expected: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\nname = "a"\n[calls]\n' + table)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)


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
    return dict(jwt.decode(answer["token"], SECRET, algorithms=["HS256"]))


async def test_local_and_foreign_members_meet_on_the_hosts_livekit(
        clients: Any, users: dict[str, str]) -> None:
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["alice"]))
    assert r.status_code == 200, r.text
    alice = r.json()
    assert alice["livekit_url"] == "wss://livekit.a.test" and alice["host"] == "a.test"
    assert alice["identity"] == "@alice:a.test" and alice["expires_at"].endswith("Z")
    claims = claims_of(alice)
    assert claims["iss"] == "APIa" and claims["sub"] == "@alice:a.test"
    assert claims["video"]["room"] == alice["livekit_room"] == livekit_room_name(room_id)
    assert claims["video"]["roomJoin"] is True
    assert claims["exp"] - claims["nbf"] == 300

    # bob's own server has no LiveKit: his token comes from the host
    r = await cb.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["bob"]))
    assert r.status_code == 200, r.text
    bob = r.json()
    assert bob["livekit_url"] == "wss://livekit.a.test" and bob["host"] == "a.test"
    assert bob["livekit_room"] == alice["livekit_room"]
    claims = claims_of(bob)  # signed with a.test's secret
    assert claims["sub"] == "@bob:b.test" and claims["name"] == "bob"
    assert claims["video"]["room"] == alice["livekit_room"]


async def test_refusals(setup: Setup, clients: Any, users: dict[str, str]) -> None:
    _, a, _ = setup
    ca, cb = clients
    room_id = await shared_room(ca, cb, users, "bob")
    # carol (b.test) is not in the room
    r = await cb.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["carol"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_ROOM_NOT_FOUND"
    r = await ca.post(f"/v1/rooms/{room_id}/call", headers=bearer(users["admin_a"]))
    assert r.status_code == 404
    r = await ca.post(f"/v1/rooms/{room_id}/call")
    assert r.status_code == 401
    # a room hosted by b.test, which has no [calls]
    r = await cb.post("/v1/rooms", json={"name": "b's"}, headers=bearer(users["bob"]))
    r = await cb.post(f"/v1/rooms/{r.json()['room_id']}/call", headers=bearer(users["bob"]))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "SW_CALLS_NOT_CONFIGURED"
    assert "livekit_url" in r.json()["error"]["message"]
    # the secret is never logged
    assert all(SECRET not in line for line in a.log_lines)
    assert a.logs("call.token_issued")
