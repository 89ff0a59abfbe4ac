"""The room rules that left storage/room_writes.py (STYLE move 1): a relay carries its
seq, a member server invites only for a joined member of its own, a peer reaches a
room we host only with a joined member in it. Pure tables."""

from __future__ import annotations

import pytest

from swfed.core.errors import FederationError
from swfed.core.rooms import (
    Room,
    check_peer_access,
    check_relay_has_seq,
    check_remote_inviter,
)

ID = "!abcdefgh:h.test"


def room(host: str = "h.test", federate: bool = True, type_: str = "standard") -> Room:
    return Room(ID, "r", type_, federate, host, "@c:h.test", 0, True)


def code(fn, *args) -> str | None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except FederationError as exc:
        return exc.code
    return None


# (room's host, me, seq carried, refusal)
RELAY_SEQ_CASES = [
    ("h.test", "m.test", 5, None),
    ("h.test", "m.test", None, "SW_FED_BAD_EVENT"),
    ("h.test", "h.test", None, None),        # to the host: it gives the seq
]


@pytest.mark.parametrize(("host", "me", "seq", "refusal"), RELAY_SEQ_CASES)
def test_relay_has_seq(host: str, me: str, seq: int | None, refusal: str | None) -> None:
    assert code(check_relay_has_seq, room(host), me, seq) == refusal


# (request origin, inviter, inviter's membership here, refusal)
REMOTE_INVITER_CASES = [
    ("m.test", "@ann:m.test", "join", None),
    ("m.test", "@ann:m.test", "invite", "SW_FED_NOT_MEMBER"),
    ("m.test", "@ann:m.test", None, "SW_FED_NOT_MEMBER"),
    ("m.test", "@bob:o.test", "join", "SW_FED_NOT_MEMBER"),  # someone else's member
]


@pytest.mark.parametrize(("origin", "inviter", "membership", "refusal"), REMOTE_INVITER_CASES)
def test_remote_inviter(origin: str, inviter: str, membership: str | None,
                        refusal: str | None) -> None:
    assert code(check_remote_inviter, ID, origin, inviter, membership) == refusal


# (room, me, requester, servers with a joined member, refusal)
PEER_ACCESS_CASES = [
    (room(), "h.test", "m.test", {"h.test", "m.test"}, None),
    (room(), "h.test", "x.test", {"h.test", "m.test"}, "SW_FED_NOT_MEMBER"),
    (None, "h.test", "m.test", {"m.test"}, "SW_FED_NOT_MEMBER"),
    (room(host="o.test"), "h.test", "m.test", {"m.test"}, "SW_FED_NOT_MEMBER"),
    (room(federate=False), "h.test", "m.test", {"m.test"}, "SW_FED_ROOM_NOT_FEDERATED"),
]


@pytest.mark.parametrize(("rm", "me", "requester", "servers", "refusal"), PEER_ACCESS_CASES)
def test_peer_access(rm: Room | None, me: str, requester: str, servers: set[str],
                     refusal: str | None) -> None:
    assert code(check_peer_access, rm, ID, me, requester, servers) == refusal
