"""Pure validation of ids and client-sent event content."""

from __future__ import annotations

import pytest

from swfed.core.errors import BadRequest
from swfed.core.events import parse_message, parse_reaction_key, parse_room_spec
from swfed.core.ids import Fqid, is_server_name, new_room_id, parse_participant, room_host


def code_of(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(BadRequest) as info:
        fn(*args)
    return info.value.code


def test_participants() -> None:
    assert parse_participant("@alice", "home.test") == Fqid("alice", "home.test")
    assert parse_participant("@bob:Peer.Example.com:8448", "home.test") == Fqid(
        "bob", "peer.example.com:8448")
    assert str(Fqid("bob", "peer")) == "@bob:peer"
    assert Fqid("bob", "home").display("home") == "@bob"
    assert Fqid("bob", "peer").display("home") == "@bob:peer"
    for bad in ["alice", "@", "@Alice", "@a:b:c:d", "@a:-bad-.com", 5, None, "@a b"]:
        assert code_of(parse_participant, bad, "home") == "SW_BAD_ID"


def test_server_names_and_room_ids() -> None:
    for good in ["localhost", "a.example.com", "127.0.0.1:8448", "[::1]:8448", "x-y.z"]:
        assert is_server_name(good)
    for bad in ["", "-a.com", "a..b", "a_b.com", "a.com:", "UPPER.com"]:
        assert not is_server_name(bad)
    room_id = new_room_id("peer.test:8448")
    assert room_host(room_id) == "peer.test:8448"
    assert room_host("!short:peer") is None
    assert room_host("nobang:peer") is None


def test_room_spec() -> None:
    spec = parse_room_spec({"name": "x"})
    assert (spec.type, spec.federate) == ("standard", False)
    assert parse_room_spec({"name": "d", "type": "dm", "federate": True}).federate is True
    assert code_of(parse_room_spec, {"name": "x", "federate": 1}) == "SW_BAD_TYPE"
    assert code_of(parse_room_spec, {"name": "  "}) == "SW_BAD_VALUE"
    assert code_of(parse_room_spec, {"type": "dm"}) == "SW_MISSING_FIELD"


def test_message() -> None:
    m = parse_message({"body": "hi", "mentions": ["@a", "@a:home", "@b:peer"]}, "home")
    assert m.content("home") == {"body": "hi", "mentions": ["@a:home", "@b:peer"]}
    assert code_of(parse_message, {"body": "x" * 40_000}, "home") == "SW_BAD_VALUE"
    assert code_of(parse_message, {"body": "x", "mentions": ["@a"] * 51}, "home") == (
        "SW_BAD_VALUE")
    assert code_of(parse_message, {"body": True}, "home") == "SW_BAD_TYPE"
    assert parse_reaction_key({"key": "🎉"}) == "🎉"
    assert code_of(parse_reaction_key, {"key": "x" * 33}) == "SW_BAD_VALUE"


def test_federated_events_are_bounded() -> None:
    import uuid

    import pytest

    from swfed.core.errors import FederationError
    from swfed.core.events import check_federated_event

    def ev(type_: str, content: dict[str, object], **extra: object) -> dict[str, object]:
        return {"event_id": str(uuid.uuid4()), "room_id": "!abcdefgh:h.test", "type": type_,
                "sender": "@m:m.test", "origin": "m.test", "origin_ts": 1,
                "content": content, "signatures": {}, **extra}

    for bad in (ev("message", {"body": "x", "mentions": [f"@u{i}:h.test" for i in range(51)]}),
                ev("message", {"body": "x", "mentions": "@u:h.test"}),
                ev("member", {"membership": "join", "display_name": "n" * 101}),
                ev("message", {"body": "x", "pad": "p" * 70_000}),
                ev("message", {"body": "x"}, origin_ts=2**63),
                ev("message", {"body": "x"}, origin_ts=-1)):
        with pytest.raises(FederationError) as info:
            check_federated_event(bad)
        assert info.value.code == "SW_FED_BAD_EVENT"
    check_federated_event(ev("message", {"body": "x", "mentions": ["@a:h.test"] * 3}))
