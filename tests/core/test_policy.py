"""Policy parsing and decisions, key validity windows, descriptor checks: pure."""

from __future__ import annotations

import pytest

from swfed.core.descriptor import KeyInfo, build_descriptor, parse_descriptor
from swfed.core.errors import BadRequest, FederationError
from swfed.core.policy import (
    Policy,
    backfill_limit,
    decide_foreign_count,
    decide_peer,
    decide_room,
    parse_policy_update,
)
from swfed.core.signing import generate_keypair, sign_json


def fed_code(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(FederationError) as info:
        fn(*args)
    return info.value.code


def test_tutorial_policy_update() -> None:
    p = parse_policy_update(Policy(), {"default_mode": "invite_only",
                                       "allowed_peers": ["Peer.Acme.com"],
                                       "max_foreign_participants_per_room": 50})
    assert p.allowed_peers == ("peer.acme.com",)
    assert p.to_json()["max_foreign_participants_per_room"] == 50
    # partial: untouched fields keep their value
    assert parse_policy_update(p, {"denied_peers": ["x.test"]}).allowed_peers == p.allowed_peers


@pytest.mark.parametrize("body", [
    {"default_mode": "sometimes"},
    {"allowed_peers": "peer.acme.com"},
    {"allowed_peers": ["not a host"]},
    {"denied_peers": [5]},
    {"max_foreign_participants_per_room": -1},
    {"max_foreign_participants_per_room": True},
    {"max_backfill_events_per_request": 5000},
    {"federation_enabled": "no"},
    {"colour": "blue"},
])
def test_bad_policy(body: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(BadRequest) as info:
        parse_policy_update(Policy(), body)
    assert info.value.code == "SW_BAD_POLICY"


def test_decide_peer() -> None:
    assert fed_code(decide_peer, Policy(), "peer.test") == "SW_FED_PEER_UNKNOWN"
    decide_peer(Policy(allowed_peers=("peer.test",)), "peer.test")
    decide_peer(Policy(allowed_peers=("*.acme.com",)), "chat.acme.com:8448")
    assert fed_code(decide_peer, Policy(allowed_peers=("*.acme.com",)), "acme.com.evil") == (
        "SW_FED_PEER_UNKNOWN")
    decide_peer(Policy(default_mode="open"), "anyone.test")
    assert fed_code(decide_peer, Policy(default_mode="open", denied_peers=("bad.test",)),
                    "bad.test") == "SW_FED_PEER_DENIED"
    assert fed_code(decide_peer, Policy(default_mode="closed", allowed_peers=("p.test",)),
                    "p.test") == "SW_FED_CLOSED"
    assert fed_code(decide_peer, Policy(default_mode="open", federation_enabled=False),
                    "p.test") == "SW_FED_DISABLED"


def test_rooms_limits_backfill() -> None:
    for kind in ("incognito", "bridge", "sidekick"):
        assert fed_code(decide_room, kind, True) == "SW_FED_ROOM_NOT_FEDERATABLE"
    assert fed_code(decide_room, "standard", False) == "SW_FED_ROOM_NOT_FEDERATED"
    decide_room("dm", True)
    decide_foreign_count(Policy(max_foreign_participants_per_room=2), 2)
    assert fed_code(decide_foreign_count, Policy(max_foreign_participants_per_room=2), 3) == (
        "SW_FED_ROOM_FULL")
    assert backfill_limit(Policy(max_backfill_events_per_request=10), 100) == 10
    assert fed_code(backfill_limit, Policy(max_backfill_events_per_request=0), 5) == (
        "SW_FED_BACKFILL_REFUSED")


def test_descriptor_roundtrip_and_checks() -> None:
    kp, old = generate_keypair(), generate_keypair()
    desc = build_descriptor("a.test", kp, [KeyInfo(old.key_id, old.public_key_b64, 1, 2)], 0)
    keys = parse_descriptor("a.test", desc, 0)
    assert [k.key_id for k in keys] == [kp.key_id, old.key_id]
    assert fed_code(parse_descriptor, "b.test", desc, 0) == "SW_FED_BAD_DESCRIPTOR"
    tampered = {**desc, "protocol_versions": ["v1", "v9"]}
    assert fed_code(parse_descriptor, "a.test", tampered, 0) == "SW_FED_SIGNATURE_MISMATCH"
    v2 = sign_json({**{k: v for k, v in desc.items() if k != "signatures"},
                    "protocol_versions": ["v2"]}, "a.test", kp)
    assert fed_code(parse_descriptor, "a.test", v2, 0) == "SW_FED_PROTOCOL_VERSION"
    keyless = build_descriptor("a.test", None, [], 0)
    assert keyless["public_key"] == ""
    assert fed_code(parse_descriptor, "a.test", keyless, 0) == "SW_FED_BAD_DESCRIPTOR"


# (pattern, peer, denied?, allowed?): a denial without a port covers every port of
# the host (issue 18: denied_peers = ["rogue.test"] admitted rogue.test:8448);
# an allowance names one server, its port included.
PEER_PATTERN_CASES = [
    ("rogue.test", "rogue.test", True, True),
    ("rogue.test", "rogue.test:8448", True, False),
    ("rogue.test:8448", "rogue.test:8448", True, True),
    ("rogue.test:8448", "rogue.test", False, False),
    ("rogue.test:8448", "rogue.test:9000", False, False),
    ("rogue.test", "rogue.test.evil", False, False),
    ("rogue.test", "notrogue.test:8448", False, False),
    ("*.rogue.test", "a.rogue.test:8448", True, True),
    ("[::1]", "[::1]:8448", True, False),
    ("10.0.0.7", "10.0.0.7:8448", True, False),
]


@pytest.mark.parametrize(("pattern", "peer", "denied", "allowed"), PEER_PATTERN_CASES)
def test_peer_patterns(pattern: str, peer: str, denied: bool, allowed: bool) -> None:
    deny = Policy(default_mode="open", denied_peers=(pattern,))
    assert (fed_code(decide_peer, deny, peer) == "SW_FED_PEER_DENIED") if denied else (
        decide_peer(deny, peer) is None)
    allow = Policy(default_mode="invite_only", allowed_peers=(pattern,))
    assert (decide_peer(allow, peer) is None) if allowed else (
        fed_code(decide_peer, allow, peer) == "SW_FED_PEER_UNKNOWN")
