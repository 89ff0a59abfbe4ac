"""Key validity (swfed.core.keys) with exact times: which key verifies what, when.

A fixed life for every case: created at 0, retired at R = 1_000_000 (ms),
overlap until E = R + 30 days.
"""

from __future__ import annotations

import pytest

from swfed.core.descriptor import build_descriptor, parse_descriptor
from swfed.core.keys import (
    DAY_MS,
    KEY_USES,
    SIGNING_GRACE_MS,
    KeyInfo,
    key_believed,
    published,
    refusal,
    retire,
    rotation_due,
    seed_expired,
    verifies_event,
    verifies_request,
)
from swfed.core.signing import generate_keypair

R = 1_000_000
E = R + 30 * DAY_MS
CURRENT = KeyInfo("ed25519:cur", "x")
RETIRED = KeyInfo("ed25519:old", "y", retired_at=R, expires_at=E)
YEARS = 10 * 365 * DAY_MS


@pytest.mark.parametrize(("key", "now", "ok"), [
    (CURRENT, 0, True),
    (CURRENT, YEARS, True),
    (RETIRED, R, True),            # just retired: in its overlap
    (RETIRED, E - 1, True),        # last millisecond of the overlap
    (RETIRED, E, False),           # the overlap has ended
    (RETIRED, E + YEARS, False),
])
def test_live_requests_need_current_or_overlap(key: KeyInfo, now: int, ok: bool) -> None:
    assert verifies_request(key, now) is ok
    assert key.usable_live(now) is ok


@pytest.mark.parametrize(("key", "origin_ts", "now", "ok"), [
    (CURRENT, 0, YEARS, True),
    # made while the key was current: verifies for ever, overlap or not
    (RETIRED, 0, E - 1, True),
    (RETIRED, R - 1, E, True),
    (RETIRED, R, E + YEARS, True),
    # a server signs with the old key until its next key reload: a grace
    (RETIRED, R + SIGNING_GRACE_MS, E + YEARS, True),
    (RETIRED, R + SIGNING_GRACE_MS + 1, E + YEARS, False),
    # made after the retirement: only during the overlap
    (RETIRED, R + DAY_MS, E - 1, True),
    (RETIRED, R + DAY_MS, E, False),
    (RETIRED, E + 5, E + 10, False),
])
def test_events_verify_with_the_key_current_when_made(key: KeyInfo, origin_ts: int, now: int,
                                                      ok: bool) -> None:
    assert verifies_event(key, origin_ts, now) is ok
    assert key.usable_for_event(origin_ts, now) is ok


def test_rotation_and_wiping_times() -> None:
    assert retire(R, 30) == (R, E)
    assert not rotation_due(None, YEARS, 365)
    assert not rotation_due(0, 365 * DAY_MS - 1, 365)
    assert rotation_due(0, 365 * DAY_MS, 365)
    assert not seed_expired(None, YEARS)
    assert not seed_expired(E, E - 1)
    assert seed_expired(E, E)


def test_refusals_say_why() -> None:
    live = refusal(RETIRED, "a.test")
    assert "ed25519:old" in live and "a.test" in live and "current key" in live
    event = refusal(RETIRED, "a.test", origin_ts=E + 5)
    assert str(E + 5) in event and "current when it was made" in event


def test_every_retired_key_stays_published() -> None:
    """After any number of rotations, every retired key is in the descriptor, forever."""
    pairs = [generate_keypair() for _ in range(6)]
    old = [KeyInfo(kp.key_id, kp.public_key_b64, *retire(i * 400 * DAY_MS, 30))
           for i, kp in enumerate(pairs[:-1])]
    assert [k.key_id for k in published([CURRENT, *old])] == [k.key_id for k in old[::-1]]
    now = 20 * 365 * DAY_MS  # long after every overlap ended
    desc = build_descriptor("a.test", pairs[-1], old, now)
    assert {k["key_id"] for k in desc["old_keys"]} == {k.key_id for k in old}
    assert all(isinstance(k["retired_at"], int) for k in desc["old_keys"])
    keys = parse_descriptor("a.test", desc, now)
    assert keys[0].key_id == pairs[-1].key_id and keys[0].current
    by_id = {k.key_id: k for k in keys}
    for i, kp in enumerate(pairs[:-1]):
        # an event made in the middle of each key's life still verifies
        assert verifies_event(by_id[kp.key_id], i * 400 * DAY_MS - DAY_MS, now)
        assert not verifies_request(by_id[kp.key_id], now)


# (learnt from, the key's server, believed?) for every use: only the server itself
# vouches for its keys (issue 18: a room's host planted a key for x.test, then
# spoke as x.test). Names are canonical before they get here.
KEY_SOURCE_CASES = [
    ("x.test", "x.test", True),             # its own descriptor, fetched from it
    ("evil.test", "x.test", False),         # the room's host relaying x.test's events
    ("b.test", "x.test", False),            # another member server's copy
    ("x.test:8448", "x.test", False),       # another port is another server
    ("x.test", "x.test:8448", False),
    ("sub.x.test", "x.test", False),
    ("x.test", "sub.x.test", False),
    ("x.test:8448", "x.test:8448", True),
]


@pytest.mark.parametrize(("learnt_from", "server_name", "believed"), KEY_SOURCE_CASES)
@pytest.mark.parametrize("use", KEY_USES)
def test_only_a_server_vouches_for_its_keys(learnt_from: str, server_name: str,
                                            believed: bool, use: str) -> None:
    assert key_believed(learnt_from, server_name, use) is believed


def test_an_unknown_key_use_is_a_bug() -> None:
    with pytest.raises(ValueError):
        key_believed("x.test", "x.test", "trust_me")
