"""One canonical server name (DESIGN §10): the function, and every place a name enters core."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swfed.core.errors import BadRequest, FederationError
from swfed.core.ids import canonical_server_name, is_server_name, parse_participant, room_host
from swfed.core.policy import (
    Policy,
    decide_peer,
    decide_relayed_origin,
    parse_policy_update,
    policy_from_stored,
)

CANONICAL = [
    ("evil.test", "evil.test"),
    ("EVIL.test", "evil.test"),
    ("evil.test.", "evil.test"),
    ("evil.test:443", "evil.test"),
    ("EVIL.TEST.:443", "evil.test"),
    ("evil.test:0443", "evil.test"),
    ("evil.test:8448", "evil.test:8448"),
    ("evil.test:08448", "evil.test:8448"),
    ("localhost", "localhost"),
    ("127.0.0.1:8448", "127.0.0.1:8448"),
    ("[::1]", "[::1]"),
    ("[::1]:443", "[::1]"),
    ("[0:0:0:0:0:0:0:1]:8448", "[::1]:8448"),
    ("[2001:DB8::1]", "[2001:db8::1]"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c", "a-b.c"),
]

BAD = [
    "", "evil.test:", "evil.test:abc", "evil.test:44x", "evil.test:0", "evil.test:65536",
    "evil.test:１２３", "evil.test:-1", "evil..test", ".evil.test", "evil.test..", "-evil.test",
    "evil-.test", "ev il.test", "evil_test", "évil.test", "a:b:c", "[::1", "[zz]", "[::1]x",
    "[::1]:", "x" * 64 + ".test", ("a." * 130) + "test", "evil.test/", "evil.test\x00",
    "@evil.test", "evil.test\ud800",
]


@pytest.mark.parametrize(("name", "canonical"), CANONICAL)
def test_canonical_server_name(name: str, canonical: str) -> None:
    assert canonical_server_name(name) == canonical
    assert canonical_server_name(canonical) == canonical
    assert is_server_name(canonical)
    assert is_server_name(name) == (name == canonical)


@pytest.mark.parametrize("name", BAD)
def test_bad_server_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest) as info:
        canonical_server_name(name)
    assert info.value.code == "SW_BAD_SERVER_NAME"
    assert len(info.value.message) < 400
    assert not is_server_name(name)


@pytest.mark.parametrize("value", [None, 5, b"evil.test", ["evil.test"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(BadRequest):
        canonical_server_name(value)
    assert not is_server_name(value)


def test_fqids_typed_locally_are_made_canonical() -> None:
    assert str(parse_participant("@x:EVIL.test.", "home.test")) == "@x:evil.test"
    assert str(parse_participant("@x:evil.test:443", "home.test")) == "@x:evil.test"
    assert str(parse_participant("@x", "home.test")) == "@x:home.test"


@pytest.mark.parametrize("fqid", ["@x:EVIL.test", "@x:evil.test.", "@x:evil.test:443",
                                  "@x:evil.test:x"])
def test_fqids_from_peers_must_be_canonical(fqid: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_participant(fqid, "")
    assert info.value.code == "SW_BAD_ID"
    assert parse_participant("@x:evil.test", "") is not None


def test_room_ids_name_a_canonical_host() -> None:
    assert room_host("!abcdefgh:evil.test") == "evil.test"
    for bad in ("!abcdefgh:EVIL.test", "!abcdefgh:evil.test.", "!abcdefgh:evil.test:443"):
        assert room_host(bad) is None


def test_policy_lists_are_stored_canonical() -> None:
    policy = parse_policy_update(Policy(), {
        "denied_peers": ["EVIL.test", "evil.test.", "evil.test:443", " Other.Test:8448 "],
        "allowed_peers": ["*.Example.COM."]})
    assert policy.denied_peers == ("evil.test", "other.test:8448")
    assert policy.allowed_peers == ("*.example.com",)
    for bad in (["evil.test:x"], ["*.example.com:8448"], ["*."], [""], [5]):
        with pytest.raises(BadRequest) as info:
            parse_policy_update(Policy(), {"denied_peers": bad})
        assert info.value.code == "SW_BAD_POLICY"


def test_policy_stored_before_canonical_names_reads_canonical() -> None:
    policy = policy_from_stored({"denied_peers": ["EVIL.test.", "evil.test:443", "x:y:z"],
                                 "default_mode": "open"}, True)
    assert policy.denied_peers == ("evil.test",)


@pytest.mark.parametrize("spelling", ["EVIL.test", "evil.test.", "evil.test:443"])
def test_denied_peers_are_not_bypassed_by_spelling(spelling: str) -> None:
    policy = parse_policy_update(Policy(default_mode="open"), {"denied_peers": ["evil.test"]})
    with pytest.raises(FederationError) as info:
        decide_peer(policy, "evil.test")
    assert info.value.code == "SW_FED_PEER_DENIED"
    with pytest.raises(FederationError) as info:
        decide_peer(policy, spelling)
    assert info.value.code == "SW_FED_BAD_SERVER_NAME"
    decide_peer(policy, "good.test")


def test_wildcards_match_any_port_but_not_the_bare_domain() -> None:
    policy = parse_policy_update(Policy(default_mode="open"),
                                 {"denied_peers": ["*.evil.test"]})
    for peer in ("a.evil.test", "a.b.evil.test:8448"):
        with pytest.raises(FederationError):
            decide_peer(policy, peer)
    for peer in ("evil.test", "notevil.test", "[::1]:8448"):
        decide_peer(policy, peer)


@pytest.mark.parametrize(("policy", "origin", "refused", "reason"), [
    (Policy(default_mode="open"), "peer.test", False, None),
    (Policy(default_mode="open", denied_peers=("evil.test",)), "evil.test", True,
     "SW_FED_PEER_DENIED"),
    (Policy(default_mode="invite_only", allowed_peers=("host.test",)), "third.test", True,
     "SW_FED_PEER_UNKNOWN"),
    (Policy(default_mode="closed"), "third.test", True, "SW_FED_CLOSED"),
])
def test_relayed_events_from_refused_origins_are_kept(policy: Policy, origin: str,
                                                      refused: bool,
                                                      reason: str | None) -> None:
    decision = decide_relayed_origin(policy, origin)
    assert decision.keep
    assert decision.refused_directly == refused
    assert decision.reason == reason


def test_relayed_origin_must_be_canonical() -> None:
    with pytest.raises(FederationError) as info:
        decide_relayed_origin(Policy(default_mode="open"), "EVIL.test")
    assert info.value.code == "SW_FED_BAD_SERVER_NAME"


names = st.one_of(
    st.text(st.sampled_from("abcXYZ019-.:[]"), max_size=30),
    st.builds(lambda labels, port, dot: ".".join(labels) + ("." if dot else "")
              + (f":{port}" if port is not None else ""),
              st.lists(st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?",
                                     fullmatch=True), min_size=1, max_size=4),
              st.one_of(st.none(), st.integers(0, 70000)), st.booleans()))


@given(names)
def test_canonical_is_idempotent_and_stable(name: str) -> None:
    try:
        canonical = canonical_server_name(name)
    except BadRequest:
        assert not is_server_name(name)
        return
    assert canonical_server_name(canonical) == canonical
    assert is_server_name(canonical)
    assert canonical == canonical.lower() and not canonical.endswith((".", ":443"))
    # whatever the spelling, a denial of the canonical name holds
    policy = parse_policy_update(Policy(default_mode="open"), {"denied_peers": [name]})
    assert policy.denied_peers == (canonical,)
    with pytest.raises(FederationError):
        decide_peer(policy, canonical)
