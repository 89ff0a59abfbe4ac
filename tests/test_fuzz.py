"""Bad text is a 4xx (issue 10, build 11): named cases, then Hypothesis over every endpoint.

One real process serves two tenants over TLS, ``a.test`` and ``c.test``,
sharing a room, so federation requests can be signed for real (as
``c.test``, with its own key) and reach the handlers behind the signature
check. The fuzzer sends a few thousand requests to every local, admin and
federation endpoint: junk and near-miss path segments, query strings,
headers (Host, Last-Event-ID, Authorization) and bodies (lone surrogates,
deep nesting, huge integers, wrong types, raw bytes). It asserts no 500, no
traceback in the server log, and the server healthy afterwards. A 502/503/504
is allowed only with an ``SW_FED_`` transport code (a fuzzed name that does
not resolve), and counted.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swfed.core.canonical import encode_canonical_json
from swfed.core.errors import SwfedError
from swfed.core.signing import KeyPair, keypair_from_seed, sign_request
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for

FED = "/_scaiwave/federation/v1"
EXAMPLES = 4000
TRANSPORT = {"SW_FED_PEER_UNREACHABLE", "SW_FED_PEER_TIMEOUT", "SW_FED_TLS_FAILED",
             "SW_FED_PRIVATE_ADDRESS", "SW_FED_RESPONSE_TOO_LARGE", "SW_FED_BAD_RESPONSE"}


class World:
    def __init__(self, net: TlsNet, srv: ServerProcess) -> None:
        self.net = net
        self.srv = srv
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.c_key: KeyPair | None = None
        self.stats = {"requests": 0, "upstream_5xx": 0, "reconnects": 0}


def _key_of(srv: ServerProcess, tenant: str) -> KeyPair:
    conn = sqlite3.connect(srv.root / "data" / "swfed.sqlite3")
    key_id, seed = conn.execute(
        "SELECT k.key_id, k.seed FROM signing_keys k JOIN tenants t USING (tenant_id)"
        " WHERE t.server_name = ? AND k.retired_at IS NULL", (tenant,)).fetchone()
    conn.close()
    return keypair_from_seed(seed, key_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    high = {"client_requests_per_second": 100_000.0, "client_burst": 1_000_000,
            "federation_requests_per_second": 100_000.0, "federation_burst": 1_000_000,
            "refused_requests_per_second": 100_000.0, "refused_requests_burst": 1_000_000,
            "streams_per_user": 1000}
    net, (a,) = federated_servers(
        tmp_path_factory.mktemp("fuzz"), ["a.test"], tenants={"a.test": ["c.test"]},
        extra={"a.test": {"limits": high, "federation": {"request_timeout_seconds": 2.0},
                          "calls": {"livekit_url": "wss://livekit.a.test",
                                    "livekit_api_key": "APIa",
                                    "livekit_api_secret": "s" * 32}}})
    with running(a):
        w = World(net, a)
        w.tokens = {"admin": a.create_user("root", admin=True), "alice": a.create_user("alice"),
                    "carol": a.create_user("carol", tenant="c.test"),
                    "croot": a.create_user("root", admin=True, tenant="c.test")}
        with httpx.Client(base_url=a.url, verify=net.ssl_context(), timeout=20) as c:
            for host, admin in (("a.test", "admin"), ("c.test", "croot")):
                r = c.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                          headers={"Host": host, **bearer(w.tokens[admin])})
                assert r.status_code == 200, r.text
            h = {"Host": "a.test", **bearer(w.tokens["alice"])}
            room = c.post("/v1/rooms", json={"name": "fuzz", "federate": True}, headers=h)
            w.ids["room"] = room.json()["room_id"]
            msg = c.post(f"/v1/rooms/{w.ids['room']}/messages", json={"body": "hi"}, headers=h)
            w.ids["event"] = msg.json()["event_id"]
            inv = c.post(f"/v1/rooms/{w.ids['room']}/invites", json={"fqid": "@carol:c.test"},
                         headers=h)
            assert inv.status_code == 201, inv.text
            w.ids["invite"] = inv.json()["invite_id"]
        w.c_key = _key_of(a, "c.test")
        yield w


# -- named cases ------------------------------------------------------------------

SURROGATE = '"\\ud800"'


@pytest.mark.parametrize(("method", "path", "raw"), [
    ("POST", "/v1/rooms", '{"name": ' + SURROGATE + '}'),
    ("POST", "/v1/rooms/{room}/messages", '{"body": ' + SURROGATE + '}'),
    ("POST", "/v1/rooms/{room}/messages", '{"body": "x", "mentions": [' + SURROGATE + ']}'),
    ("POST", "/v1/rooms/{room}/messages/{event}/reactions", '{"key": ' + SURROGATE + '}'),
    ("POST", "/v1/rooms/{room}/invites", '{"fqid": "@a:\\udfff"}'),
    ("PUT", "/v1/admin/federation/policy", '{"denied_peers": [' + SURROGATE + ']}'),
    ("POST", "/v1/rooms", '{"name": "x", ' + SURROGATE + ': 1}'),
    ("POST", "/v1/rooms", '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("POST", "/v1/rooms", '{"name": ' + '{"a":' * 40 + "1" + "}" * 40 + "}"),
    ("POST", "/v1/rooms", '{"name": "x", "federate": 1' + "0" * 5000 + "}"),
    ("POST", "/v1/login", '{"local_id": ' + SURROGATE + ', "password": "x"}'),
])
def test_bad_text_is_a_400(world: World, method: str, path: str, raw: str) -> None:
    url = world.srv.url + path.format(**world.ids)
    r = httpx.request(method, url, content=raw.encode(), verify=world.net.ssl_context(),
                      headers={"Host": "a.test", **bearer(world.tokens["admin"])})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"].startswith("SW_")


@pytest.mark.parametrize("value", [str(2**63), str(2**62 + 1), "-1", "abc", "1e3", "１", "0x10",
                                   "9 9" * 20])
def test_bad_last_event_id_is_a_400(world: World, value: str) -> None:
    r = httpx.get(world.srv.url + "/v1/me/stream", verify=world.net.ssl_context(),
                  headers={"Host": "a.test", "Last-Event-ID": value.encode(),
                           **bearer(world.tokens["alice"])})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_BAD_PARAM", r.text


def test_a_signed_body_with_a_lone_surrogate_is_a_400(world: World) -> None:
    assert world.c_key is not None
    uri = FED + f"/rooms/{world.ids['room']}/invites"
    raw = b'{"inviter": "@carol:c.test", "invitee": "@x\\ud800:a.test"}'
    auth = sign_request(method="POST", uri=uri, origin="c.test", destination="a.test",
                        ts_ms=int(time.time() * 1000), content=None, keypair=world.c_key)
    r = httpx.post(world.srv.url + uri, content=raw, verify=world.net.ssl_context(),
                   headers={"Host": "a.test", "Authorization": auth})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_BAD_JSON", r.text


# -- the fuzzer -------------------------------------------------------------------

# (method, path template, who): who is a token name, "fed" (signed as c.test) or None.
ENDPOINTS: list[tuple[str, str, str | None]] = [
    ("GET", "/v1/me", "alice"), ("GET", "/v1/me/rooms", "alice"),
    ("GET", "/v1/me/notifications", "carol"), ("POST", "/v1/me/federated-dms", "alice"),
    ("POST", "/v1/me/invites/{invite}/accept", "carol"),
    ("POST", "/v1/me/invites/{invite}/decline", "carol"),
    ("GET", "/v1/me/stream", "alice"), ("GET", "/v1/search", "alice"),
    ("POST", "/v1/rooms", "alice"), ("GET", "/v1/rooms/{room}", "alice"),
    ("PATCH", "/v1/rooms/{room}", "alice"), ("GET", "/v1/rooms/{room}/members", "alice"),
    ("POST", "/v1/rooms/{room}/invites", "alice"),
    ("DELETE", "/v1/rooms/{room}/invites/{invite}", "alice"),
    ("POST", "/v1/rooms/{room}/join", "carol"), ("POST", "/v1/rooms/{room}/leave", "alice"),
    ("GET", "/v1/rooms/{room}/messages", "alice"),
    ("POST", "/v1/rooms/{room}/messages", "alice"),
    ("POST", "/v1/rooms/{room}/messages/{event}/reactions", "alice"),
    ("POST", "/v1/rooms/{room}/call", "alice"),
    ("POST", "/v1/login", None), ("POST", "/v1/logout", "carol"),
    ("GET", "/v1/admin/federation/policy", "admin"),
    ("PUT", "/v1/admin/federation/policy", "admin"),
    ("GET", "/v1/admin/federation/peers", "admin"),
    ("POST", "/v1/admin/federation/peers/{peer}/retry", "admin"),
    ("POST", "/v1/admin/federation/foreign/{fqid}/refresh", "admin"),
    ("POST", "/v1/admin/rooms/{room}/federation/backfill", "admin"),
    ("GET", "/v1/admin/federation/rejected", "admin"), ("GET", "/v1/admin/audit", "admin"),
    ("GET", "/metrics", "admin"), ("GET", "/healthz", None),
    ("GET", "/.well-known/scaiwave/server", None),
    ("GET", FED + "/probe", "fed"), ("POST", FED + "/send", "fed"),
    ("GET", FED + "/profile/{user}", "fed"), ("GET", FED + "/rooms/{room}/members", "fed"),
    ("GET", FED + "/rooms/{room}/backfill", "fed"),
    ("POST", FED + "/rooms/{room}/membership", "fed"),
    ("POST", FED + "/rooms/{room}/invites", "fed"),
    ("POST", FED + "/rooms/{room}/invites/{invite}/cancel", "fed"),
    ("POST", FED + "/rooms/{room}/call", "fed"),
]
FIELDS = ["name", "type", "federate", "body", "in_reply_to", "mentions", "key", "fqid",
          "local_id", "password", "default_mode", "allowed_peers", "denied_peers",
          "max_foreign_participants_per_room", "max_backfill_events_per_request",
          "federation_enabled", "origin", "events", "event", "inviter", "invitee", "actor",
          "user", "display_name", "limit", "txn_id", "event_id", "room_id", "sender",
          "content", "signatures", "origin_ts", "membership", "relates_to"]
QUERY = ["before", "after", "limit", "q", "since", "peer", "reason", "action"]

surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d"])
text = st.one_of(st.text(max_size=40), surrogates,
                 st.sampled_from(["", "@carol:c.test", "@alice", "@x:EVIL.test.", "a.test",
                                  "c.test", "C.TEST:443", "*.test", "x:abc", "!x:a.test",
                                  "open", "closed", "invite_only", "join", "leave", "message",
                                  "reaction", "member", "\x00", "%00", "../..", "9" * 30]))
integers = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**53, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), integers, text)
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)),
    max_leaves=12)


@st.composite
def bodies(draw: st.DrawFn, world: World) -> bytes | None:
    kind = draw(st.sampled_from(["none", "fields", "fields", "fields", "value", "raw", "deep"]))
    if kind == "none":
        return None
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        n = draw(st.integers(30, 3000))
        return ('{"name": ' + "[" * n + "1" + "]" * n + "}").encode()
    if kind == "value":
        value = draw(json_values)
    else:
        real = st.sampled_from([world.ids["room"], world.ids["event"], world.ids["invite"],
                                "@carol:c.test", "@alice:a.test", "c.test"])
        value = draw(st.dictionaries(st.sampled_from(FIELDS), st.one_of(json_values, real),
                                     max_size=5))
    return json.dumps(value, ensure_ascii=True).encode()


def _segment(draw: st.DrawFn, world: World, name: str) -> str:
    real = {"room": world.ids["room"], "event": world.ids["event"],
            "invite": world.ids["invite"], "peer": "c.test", "fqid": "@carol:c.test",
            "user": "carol"}[name]
    value = draw(st.one_of(st.just(real), st.just(real), text, st.just(real.upper())))
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")


header_text = st.text(st.characters(blacklist_categories=["Cc", "Cs"], max_codepoint=0xFF),
                      max_size=60)


@st.composite
def requests(draw: st.DrawFn, world: World) -> tuple[str, str, dict[str, str], bytes | None]:
    method, template, who = draw(st.sampled_from(ENDPOINTS))
    path = template
    for name in ("room", "event", "invite", "peer", "fqid", "user"):
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", _segment(draw, world, name))
    query = draw(st.dictionaries(st.sampled_from(QUERY),
                                 st.one_of(text, integers.map(str)), max_size=3))
    qs = urllib.parse.urlencode({k: v.encode("utf-8", "surrogatepass")
                                 for k, v in query.items()})
    uri = path + ("?" + qs if qs else "")
    host = draw(st.one_of(st.just("c.test" if who == "carol" or who == "croot" else "a.test"),
                          st.sampled_from(["a.test", "c.test", "A.TEST.", "x..y", "",
                                           "a.test:99999"]), header_text))
    headers = {"Host": host} if host else {}
    if draw(st.integers(0, 9)) == 0:
        headers["Last-Event-ID"] = draw(st.one_of(header_text, integers.map(str)))
    body = draw(bodies(world))
    if who == "fed":
        assert world.c_key is not None
        content = None
        if body is not None:
            try:
                content = json.loads(body)
            except (ValueError, RecursionError):
                content = None
        mode = draw(st.sampled_from(["good", "good", "good", "junk", "none", "stale"]))
        if mode in ("good", "stale"):
            try:
                headers["Authorization"] = sign_request(
                    method=method, uri=uri, origin="c.test", destination="a.test",
                    ts_ms=int(time.time() * 1000) - (600_000 if mode == "stale" else 0),
                    content=content if isinstance(content, dict) else None,
                    keypair=world.c_key)
            except Exception:  # content our signer refuses (floats, surrogates): send junk
                headers["Authorization"] = "SW-Fed junk"
        elif mode == "junk":
            headers["Authorization"] = "SW-Fed " + draw(header_text)
        if draw(st.integers(0, 3)) == 0 and body is not None:
            try:
                body = encode_canonical_json(json.loads(body))
            except (ValueError, RecursionError, SwfedError):
                pass
    elif who is not None:
        headers.update(bearer(world.tokens[who]) if draw(st.integers(0, 9)) else
                       {"Authorization": "Bearer " + draw(header_text)})
    return method, uri, headers, body


def test_fuzz_every_endpoint(world: World) -> None:
    started = time.monotonic()
    client = httpx.Client(base_url=world.srv.url, verify=world.net.ssl_context(), timeout=30)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        method, uri, headers, body = data.draw(requests(world))
        raw_headers = {k: v.strip(" \t").encode("latin-1", "replace")
                       for k, v in headers.items()}
        for attempt in (1, 2):
            try:
                with client.stream(method, uri, headers=raw_headers, content=body) as r:
                    status = r.status_code
                    if r.headers.get("content-type", "").startswith("application/json"):
                        r.read()
                break
            except httpx.RemoteProtocolError:
                # A kept-alive connection the server closed as this request went
                # out (it answers some refusals without reading the body, then
                # closes): what any client does is try once more on a new one.
                world.stats["reconnects"] += 1
                if attempt == 2:
                    raise
        world.stats["requests"] += 1
        if status >= 500:
            code = r.json()["error"]["code"] if r.is_stream_consumed else ""
            assert status in (502, 503, 504) and code in TRANSPORT, (
                method, uri, headers, body, status, code)
            world.stats["upstream_5xx"] += 1

    with client:
        one()
        elapsed = time.monotonic() - started
        print(f"\nfuzz: {world.stats['requests']} requests in {elapsed:.1f} s, "
              f"{world.stats['upstream_5xx']} upstream 5xx (a fuzzed peer name unreachable), "
              f"{world.stats['reconnects']} reconnects")
        assert world.stats["requests"] >= EXAMPLES
        bad = [line for line in world.srv.log_lines
               if "Traceback" in line or "internal_error" in line
               or "Error in ASGI" in line]
        assert not bad, bad[:3]

        def healthy() -> bool:
            return client.get("/healthz", headers={"Host": "a.test"}).status_code == 200

        import trio

        async def check() -> None:
            await wait_for(healthy, what="/healthz after the fuzz")

        trio.run(check)
        r = client.get("/v1/me", headers={"Host": "a.test", **bearer(world.tokens["admin"])})
        assert r.status_code == 200
