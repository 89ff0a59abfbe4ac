"""The room rules as tables of cases: who, what, which room state → admitted, or which code.

No I/O: :mod:`swfed.core.rooms` is plain functions over plain values.
"""

from __future__ import annotations

from typing import Any

import pytest

from swfed.core.errors import FederationError, SwfedError
from swfed.core.policy import Policy
from swfed.core.rooms import (
    CloseInvites,
    EndInvite,
    Facts,
    HostMembers,
    Notify,
    RecordInvite,
    Room,
    SetMembership,
    StateAnswer,
    admit,
    check_invite,
    check_repair_page,
    check_set_federate,
    effects,
    host_seq,
    members_from_host,
    membership_start,
    refusal_ends_invite,
    repair_after,
    restarts_copy,
    route_targets,
    span_start,
    state_answer,
    state_events,
    unsigned_seq,
)

HOSTED = "!abcdefgh:h.test"
OPEN = Policy(default_mode="open", max_foreign_participants_per_room=2)


def room(host: str = "h.test", federate: bool = True, type_: str = "standard") -> Room:
    return Room(HOSTED, "r", type_, federate, host, "@c:h.test", 0, True)


def event(type_: str, sender: str, content: dict[str, Any] | None = None,
          room_id: str = HOSTED) -> dict[str, Any]:
    return {"event_id": "e", "room_id": room_id, "type": type_, "sender": sender,
            "origin": sender.partition(":")[2], "origin_ts": 1, "content": content or {}}


def invite(invitee: str, members: list[str] | None = None) -> dict[str, Any]:
    content = {"invitee": invitee, "invite_id": "i", "room_name": "r", "room_type": "standard"}
    if members is not None:
        content["members"] = members
    return event("invite", "@c:h.test", content)


JOIN = {"membership": "join"}
LEAVE = {"membership": "leave"}
MSG = {"body": "hi"}

# (what happens, the event, facts) -> None (admitted) or the SW_ code
ADMIT_CASES: list[tuple[str, dict[str, Any], Facts, str | None]] = [
    # -- at the host
    ("member's own message", event("message", "@b:m.test", MSG),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="join"), None),
    ("message of an invited, not joined sender", event("message", "@b:m.test", MSG),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="invite"), "SW_FED_NOT_MEMBER"),
    ("message of someone who left", event("message", "@b:m.test", MSG),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="leave"), "SW_FED_NOT_MEMBER"),
    ("join with an invite", event("member", "@b:m.test", JOIN),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="invite", foreign_count=2),
     None),
    ("join without an invite", event("member", "@b:m.test", JOIN),
     Facts("h.test", "m.test", room(), OPEN, sender_membership=None), "SW_FED_NOT_INVITED"),
    ("join after leaving, no new invite", event("member", "@b:m.test", JOIN),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="leave"),
     "SW_FED_NOT_INVITED"),
    ("leave of a member", event("member", "@b:m.test", LEAVE),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="join"), None),
    ("decline of an invitee", event("member", "@b:m.test", {"membership": "decline"}),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="invite"), None),
    ("leave of a stranger", event("member", "@b:m.test", LEAVE),
     Facts("h.test", "m.test", room(), OPEN, sender_membership=None), "SW_FED_NOT_MEMBER"),
    ("host's flag is off", event("message", "@b:m.test", MSG),
     Facts("h.test", "m.test", room(federate=False), OPEN, sender_membership="join"),
     "SW_FED_ROOM_NOT_FEDERATED"),
    ("unknown room", event("message", "@b:m.test", MSG),
     Facts("h.test", "m.test", None, OPEN), "SW_FED_UNKNOWN_ROOM"),
    ("a member server relays someone else's event", event("message", "@x:o.test", MSG),
     Facts("h.test", "m.test", room(), OPEN, sender_membership="join"), "SW_FED_NOT_HOST"),
    ("only the host writes: its origin sends its own event to a member server",
     event("message", "@x:o.test", MSG), Facts("m.test", "o.test", room(), OPEN),
     "SW_FED_NOT_HOST"),
    ("only the host writes: a stranger's join sent to a member server",
     event("member", "@x:o.test", JOIN), Facts("m.test", "o.test", room(), OPEN),
     "SW_FED_NOT_HOST"),
    ("an invite id taken by another invite", invite("@b:m.test"),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=True, known_invite_event="other"),
     "SW_FED_EVENT_CONFLICT"),
    ("the same invite again (its own event id)", invite("@b:m.test"),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=True, known_invite_event="e"), None),
    # -- at a member server
    ("host relays a third server's message", event("message", "@x:o.test", MSG),
     Facts("m.test", "h.test", room(), OPEN), None),
    ("member server's flag is off", event("message", "@x:o.test", MSG),
     Facts("m.test", "h.test", room(federate=False), OPEN), "SW_FED_ROOM_NOT_FEDERATED"),
    ("invite from the host", invite("@b:m.test", ["@c:h.test"]),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=True), None),
    ("invite for a user who does not exist", invite("@nobody:m.test"),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=False), "SW_FED_USER_NOT_FOUND"),
    ("invite addressed to another server", invite("@b:x.test"),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=True), "SW_FED_BAD_EVENT"),
    ("invite into a full room (our limit)",
     invite("@b:m.test", ["@c:h.test", "@d:x.test", "@e:y.test"]),
     Facts("m.test", "h.test", None, OPEN, invitee_exists=True), "SW_FED_ROOM_FULL"),
    ("invite for someone else, relayed to a member server", invite("@x:o.test"),
     Facts("m.test", "h.test", room(), OPEN), None),
    ("invite for a user of ours, into a room we are in", invite("@b:m.test"),
     Facts("m.test", "h.test", room(), OPEN, invitee_exists=True), None),
    ("invite for a user of ours who does not exist, into a room we are in (a phantom)",
     invite("@nobody:m.test"), Facts("m.test", "h.test", room(), OPEN, invitee_exists=False),
     "SW_FED_USER_NOT_FOUND"),
    ("another room's invite with the same id is no conflict (looked up per room)",
     invite("@b:m.test"), Facts("m.test", "h.test", None, OPEN, invitee_exists=True,
                                known_invite_event=None), None),
    ("invite relayed by a server that does not host the room",
     {**invite("@b:m.test"), "origin": "o.test", "sender": "@c:o.test"},
     Facts("m.test", "o.test", None, OPEN, invitee_exists=True), "SW_FED_NOT_HOST"),
]


@pytest.mark.parametrize(("what", "ev", "facts", "code"), ADMIT_CASES,
                         ids=[c[0] for c in ADMIT_CASES])
def test_admit(what: str, ev: dict[str, Any], facts: Facts, code: str | None) -> None:
    if code is None:
        admit(ev, facts)
    else:
        with pytest.raises(SwfedError) as info:
            admit(ev, facts)
        assert info.value.code == code


def test_an_invite_creates_our_copy_of_the_room() -> None:
    admission = admit(invite("@b:m.test", ["@c:h.test"]),
                      Facts("m.test", "h.test", None, OPEN, invitee_exists=True))
    assert admission.new_room is not None
    assert (admission.new_room.host, admission.new_room.federate) == ("h.test", True)


ROUTE_CASES = [
    ("host relays to other member servers, not to the origin",
     room(), event("message", "@b:m.test", MSG), "h.test", {"h.test", "m.test", "o.test"},
     {"o.test"}),
    ("host's own message to every member server", room(), event("message", "@c:h.test", MSG),
     "h.test", {"h.test", "m.test"}, {"m.test"}),
    ("an invite also goes to the invitee's server", room(), invite("@b:n.test"), "h.test",
     {"h.test", "m.test"}, {"m.test", "n.test"}),
    # the rows are queued and held while the host's flag is off (a hold, not a fork)
    ("host queues while its flag is off", room(federate=False),
     event("message", "@c:h.test", MSG), "h.test", {"h.test", "m.test"}, {"m.test"}),
    ("a cancelled invite's uninvite also goes to the invitee's server", room(),
     {**event("uninvite", "@c:h.test", {"invitee": "@b:n.test", "invite_id": "i",
                                        "reason": "cancelled"})},
     "h.test", {"h.test", "m.test"}, {"m.test", "n.test"}),
    ("a refused invite's uninvite does not go back to the server that refused", room(),
     {**event("uninvite", "@c:h.test", {"invitee": "@b:n.test", "invite_id": "i",
                                        "reason": "SW_FED_USER_NOT_FOUND"})},
     "h.test", {"h.test", "m.test"}, {"m.test"}),
    ("a member server sends its own users' events to the host", room(),
     event("message", "@b:m.test", MSG), "m.test", {"h.test", "m.test", "o.test"},
     {"h.test"}),
    ("a member server never relays", room(), event("message", "@x:o.test", MSG), "m.test",
     {"h.test", "m.test", "o.test"}, set()),
]


@pytest.mark.parametrize(("what", "rm", "ev", "me", "servers", "targets"), ROUTE_CASES,
                         ids=[c[0] for c in ROUTE_CASES])
def test_route_targets(what: str, rm: Room, ev: dict[str, Any], me: str, servers: set[str],
                       targets: set[str]) -> None:
    assert route_targets(rm, ev, me, servers) == targets


def test_a_member_servers_write_with_its_flag_off_is_refused() -> None:
    with pytest.raises(SwfedError) as info:
        route_targets(room(federate=False), event("message", "@b:m.test", MSG), "m.test",
                      {"h.test", "m.test"})
    assert info.value.code == "SW_FED_ROOM_NOT_FEDERATED"


EFFECT_CASES = [
    ("an invite to one of ours", invite("@b:m.test"), "m.test", {"@b:m.test": None},
     [SetMembership("@b:m.test", "invite"), RecordInvite("i", "@b:m.test", "@c:h.test", "b")]),
    ("an invite for a foreign user", invite("@b:m.test"), "h.test", {"@b:m.test": None},
     [SetMembership("@b:m.test", "invite"), RecordInvite("i", "@b:m.test", "@c:h.test", None)]),
    ("an invite of someone already joined leaves them joined", invite("@b:m.test"), "h.test",
     {"@b:m.test": "join"}, [RecordInvite("i", "@b:m.test", "@c:h.test", None)]),
    ("a join", event("member", "@b:m.test", {**JOIN, "display_name": "Bob"}), "h.test", {},
     [SetMembership("@b:m.test", "join", "Bob"), CloseInvites("@b:m.test", "accepted")]),
    ("a decline", event("member", "@b:m.test", {"membership": "decline"}), "h.test", {},
     [SetMembership("@b:m.test", "leave"), CloseInvites("@b:m.test", "declined")]),
    ("mentions notify joined local members, not the sender nor foreign ones",
     event("message", "@c:h.test", {"body": "x", "mentions": [
         "@a:h.test", "@c:h.test", "@z:m.test", "@gone:h.test"]}), "h.test",
     {"@a:h.test": "join", "@c:h.test": "join", "@z:m.test": "join", "@gone:h.test": "leave"},
     [Notify("a", "mention", "@c:h.test")]),
    ("a reaction changes nothing", event("reaction", "@c:h.test",
                                         {"relates_to": "e", "key": "+"}), "h.test", {}, []),
    ("a cancel of our invitee's invite: it ends, they are told",
     event("uninvite", "@c:h.test", {"invitee": "@b:m.test", "invite_id": "i",
                                     "reason": "cancelled"}), "m.test", {"@b:m.test": "invite"},
     [SetMembership("@b:m.test", "leave"), EndInvite("i", "cancelled"),
      Notify("b", "invite_cancelled", "@c:h.test", {"invite_id": "i"})]),
    ("an uninvite naming no invite of this room (another room's id): nobody is told",
     event("uninvite", "@c:h.test", {"invitee": "@b:m.test", "invite_id": "i",
                                     "reason": "cancelled"}), "m.test", {"@b:m.test": None},
     [EndInvite("i", "cancelled")]),
    ("a refusal of our inviter's invite: the inviter is told",
     event("uninvite", "@c:m.test", {"invitee": "@b:x.test", "invite_id": "i",
                                     "reason": "SW_FED_USER_NOT_FOUND"}), "m.test",
     {"@b:x.test": "invite"},
     [SetMembership("@b:x.test", "leave"), EndInvite("i", "refused"),
      Notify("c", "invite_refused", "@c:m.test", {
          "invite_id": "i", "invitee": "@b:x.test",
          "error": {"code": "SW_FED_USER_NOT_FOUND", "message": ""}})]),
]


@pytest.mark.parametrize(("what", "ev", "me", "memberships", "expected"), EFFECT_CASES,
                         ids=[c[0] for c in EFFECT_CASES])
def test_effects(what: str, ev: dict[str, Any], me: str,
                 memberships: dict[str, str | None], expected: list[Any]) -> None:
    assert effects(ev, me, memberships) == expected


def test_host_seq_only_from_the_host() -> None:
    ev = {**event("message", "@x:o.test", MSG), "unsigned": {"seq": 7}}
    assert host_seq(room(), "m.test", "h.test", ev) == 7
    assert host_seq(room(), "m.test", "o.test", ev) is None  # not relayed by the host
    assert host_seq(room(), "h.test", "m.test", ev) is None  # we are the host
    for bad in (True, 0, -1, 2**40, "7"):
        assert host_seq(room(), "m.test", "h.test", {**ev, "unsigned": {"seq": bad}}) is None


@pytest.mark.parametrize(("rm", "me", "membership", "code"), [
    (room(), "h.test", None, None),
    (room(), "h.test", "invite", None),
    (room(), "h.test", "leave", None),
    (room(), "h.test", "join", "SW_ALREADY_MEMBER"),
    (room(), "m.test", None, "SW_NOT_HOST"),
])
def test_check_invite(rm: Room, me: str, membership: str | None, code: str | None) -> None:
    if code is None:
        check_invite(rm, me, "@b:m.test", membership)
    else:
        with pytest.raises(SwfedError) as info:
            check_invite(rm, me, "@b:m.test", membership)
        assert info.value.code == code


@pytest.mark.parametrize(("actor", "admin", "type_", "federate", "code"), [
    ("@c:h.test", False, "standard", True, None),
    ("@x:h.test", True, "standard", True, None),
    ("@x:h.test", False, "standard", False, "SW_NOT_ROOM_ADMIN"),
    ("@c:h.test", False, "incognito", True, "SW_FED_ROOM_NOT_FEDERATABLE"),
    ("@c:h.test", False, "incognito", False, None),
])
def test_check_set_federate(actor: str, admin: bool, type_: str, federate: bool,
                            code: str | None) -> None:
    rm = room(type_=type_)
    if code is None:
        check_set_federate(rm, actor, admin, federate)
    else:
        with pytest.raises(SwfedError) as info:
            check_set_federate(rm, actor, admin, federate)
        assert info.value.code == code


def test_a_replay_is_a_no_op_only_for_the_same_event() -> None:
    from swfed.core.rooms import check_replay

    signed = {**event("message", "@b:m.test", MSG), "signatures": {"m.test": {"k": "s"}}}
    check_replay({**signed, "unsigned": {"seq": 3}}, signed)  # unsigned is not the event
    for other in ({**signed, "content": {"body": "squatted"}}, {**signed, "origin_ts": 2}):
        with pytest.raises(SwfedError) as info:
            check_replay(other, signed)
        assert info.value.code == "SW_FED_EVENT_CONFLICT"
    with pytest.raises(SwfedError):
        check_replay(signed, None)  # stored unsigned (a local event without a key)


# -- what a host vouches for, and what it owes (issue 18) ------------------------------

# (what, the refused event, the refusing server) -> does the invite end?
REFUSAL_CASES = [
    ("the invitee's server refuses the invite", invite("@b:m.test"), "m.test", True),
    ("another member server refuses the relayed invite", invite("@b:m.test"), "o.test", False),
    ("a refused message ends nothing", event("message", "@c:h.test", MSG), "m.test", False),
    ("an invite without an invitee ends nothing",
     event("invite", "@c:h.test", {"invite_id": "i"}), "m.test", False),
]


@pytest.mark.parametrize(("what", "ev", "by", "ends"), REFUSAL_CASES,
                         ids=[c[0] for c in REFUSAL_CASES])
def test_refusal_ends_invite(what: str, ev: dict[str, Any], by: str, ends: bool) -> None:
    assert refusal_ends_invite(ev, by) is ends


def listed(fqid: str, membership: str = "join", name: str | None = None) -> dict[str, Any]:
    return {"fqid": fqid, "membership": membership, "display_name": name}


# (what, the host's list, our users' memberships here) -> what we take, the lies
HOST_MEMBER_CASES: list[tuple[str, list[Any], dict[str, str | None], HostMembers]] = [
    ("foreign members are the host's word",
     [listed("@c:h.test", name="C"), listed("@x:o.test", "invite")], {},
     HostMembers({"@c:h.test": ("join", "C"), "@x:o.test": ("invite", None)}, [])),
    ("our member who joined herself is not taken again, and no lie",
     [listed("@b:m.test")], {"@b:m.test": "join"}, HostMembers({}, [])),
    ("our user listed as joined without joining: ignored, a lie",
     [listed("@c:h.test"), listed("@carol:m.test")], {"@carol:m.test": None},
     HostMembers({"@c:h.test": ("join", None)}, ["@carol:m.test"])),
    ("our invitee listed as joined: ignored, a lie",
     [listed("@carol:m.test")], {"@carol:m.test": "invite"},
     HostMembers({}, ["@carol:m.test"])),
    ("our user listed as invited without an invite here: a lie",
     [listed("@carol:m.test", "invite")], {"@carol:m.test": "leave"},
     HostMembers({}, ["@carol:m.test"])),
    ("our member listed as invited (stale): ignored, no lie",
     [listed("@b:m.test", "invite")], {"@b:m.test": "join"}, HostMembers({}, [])),
    ("nonsense entries are skipped",
     ["x", {"fqid": 3}, listed("nobody"), listed("@c:h.test", "leave")], {},
     HostMembers({}, [])),
]


@pytest.mark.parametrize(("what", "members", "ours", "expected"), HOST_MEMBER_CASES,
                         ids=[c[0] for c in HOST_MEMBER_CASES])
def test_members_from_host(what: str, members: list[Any], ours: dict[str, str | None],
                           expected: HostMembers) -> None:
    assert members_from_host(members, "m.test", ours, 100) == expected


def test_members_from_host_reads_at_most_its_limit() -> None:
    many = [listed(f"@u{i}:h.test") for i in range(10)]
    assert len(members_from_host(many, "m.test", {}, 3).take) == 3


# (what, member events of one server's users) -> where its current span began
SPAN_CASES: list[tuple[str, list[tuple[int, str, str]], int | None]] = [
    ("never joined", [], None),
    ("joined once", [(3, "@b:m.test", "join")], 3),
    ("a second member joins later: the span is the first's", [
        (3, "@b:m.test", "join"), (7, "@d:m.test", "join")], 3),
    ("the first leaves, the second stays: same span", [
        (3, "@b:m.test", "join"), (7, "@d:m.test", "join"), (9, "@b:m.test", "leave")], 3),
    ("all left: no span", [(3, "@b:m.test", "join"), (5, "@b:m.test", "leave")], None),
    ("all left, then back: the span starts at the return", [
        (3, "@b:m.test", "join"), (5, "@b:m.test", "leave"), (12, "@b:m.test", "join")], 12),
    ("declined only", [(4, "@b:m.test", "decline")], None),
]


@pytest.mark.parametrize(("what", "events", "start"), SPAN_CASES,
                         ids=[c[0] for c in SPAN_CASES])
def test_span_start(what: str, events: list[tuple[int, str, str]], start: int | None) -> None:
    assert span_start(events) == start


@pytest.mark.parametrize(("after", "span", "last", "start"), [
    (0, 12, 20, 11),  # asked from the start: from its span on
    (15, 12, 20, 15),  # inside its span: what it asked
    (0, None, 20, 20),  # no span: nothing
])
def test_repair_after(after: int, span: int | None, last: int, start: int) -> None:
    assert repair_after(after, span, last) == start


@pytest.mark.parametrize(("membership", "backfill", "expected"), [
    ("join", 500, StateAnswer(members=True, history=50)),
    ("join", 10, StateAnswer(members=True, history=10)),
    ("join", 0, StateAnswer(members=True, history=0)),
    ("leave", 500, StateAnswer(members=False, history=0)),
    ("decline", 500, StateAnswer(members=False, history=0)),
])
def test_state_answer(membership: str, backfill: int, expected: StateAnswer) -> None:
    policy = Policy(max_backfill_events_per_request=backfill)
    assert state_answer(membership, policy, 50) == expected


def seqd(seq: int) -> dict[str, Any]:
    return {**event("message", "@c:h.test", MSG), "unsigned": {"seq": seq}}


@pytest.mark.parametrize(("span", "history", "seqs"), [
    (8, 0, [10, 9, 8]),  # policy 0: only what the caller's span holds
    (8, 2, [10, 9, 8, 7, 6]),
    (None, 1, [10]),
    (3, 50, [10, 9, 8, 7, 6, 5]),
])
def test_state_events(span: int | None, history: int, seqs: list[int]) -> None:
    newest = [seqd(s) for s in (10, 9, 8, 7, 6, 5)] + [{"unsigned": "seq"}]
    assert [e["unsigned"]["seq"] for e in state_events(newest, span, history)] == seqs


@pytest.mark.parametrize(("synced", "seq", "ours_joined", "restarts"), [
    (5, 8, False, True),  # a re-invite behind things said while none of ours was in
    (5, 6, False, False),  # the next one: no gap
    (5, 8, True, False),  # ours are in: a gap, repaired
    (0, 8, False, False),  # no copy yet: nothing to restart
])
def test_restarts_copy(synced: int, seq: int, ours_joined: bool, restarts: bool) -> None:
    assert restarts_copy(synced, seq, ours_joined) is restarts


@pytest.mark.parametrize(("synced", "seq", "membership", "ours_before", "start"), [
    (0, 4, "join", False, 4),  # our first join
    (0, 4, "decline", False, 4),
    (6, 9, "join", False, 9),  # back after all of ours left: from the join on
    (6, 9, "join", True, None),  # a second member of ours: the copy goes on
    (6, 9, "leave", True, None),
])
def test_membership_start(synced: int, seq: int, membership: str, ours_before: bool,
                          start: int | None) -> None:
    assert membership_start(synced, seq, membership, ours_before) == start


@pytest.mark.parametrize(("raw", "seq"), [
    ({"unsigned": {"seq": 3}}, 3),
    ({"unsigned": "seq"}, None),
    ({"unsigned": {"seq": "3"}}, None),
    ({"unsigned": {"seq": True}}, None),
    ({"unsigned": {"seq": 2**40}}, None),
    ({"unsigned": {"seq": 0}}, None),
    ({}, None),
    ("x", None),
])
def test_unsigned_seq(raw: Any, seq: int | None) -> None:
    assert unsigned_seq(raw) == seq


# (after, limit, page seqs, last_seq) -> the lie named, or None for a truthful page
REPAIR_PAGE_CASES = [
    (5, 100, [6, 7], 7, None),
    (5, 100, [], 5, None),  # nothing new
    (5, 100, [], 3, None),  # behind our mark: nothing to fetch
    (5, 2, [6, 7], 9, None),  # a full page, more to come
    (5, 100, [7, 9], 9, None),  # holes an honest host may have (events it cannot sign)
    (5, 100, [6, 7], None, "not a seq a room can have"),
    (5, 100, [6], 2**40, "not a seq a room can have"),
    (5, 2, [6, 7, 8], 9, "more than the 2 asked"),
    (5, 100, [6, 6], 7, "out of order or outside the asked range"),
    (5, 100, [7, 6], 7, "out of order or outside the asked range"),
    (5, 100, [5], 7, "out of order or outside the asked range"),
    (5, 100, [6, 8], 7, "out of order or outside the asked range"),
    (5, 100, [6, None], 7, "out of order or outside the asked range"),
    (5, 100, [6], 10**12, "claims more than it delivers"),
    (5, 100, [], 6, "claims more than it delivers"),
]


@pytest.mark.parametrize(("after", "limit", "seqs", "last_seq", "lie"), REPAIR_PAGE_CASES)
def test_repair_pages_that_lie_are_named(after: int, limit: int, seqs: list[int | None],
                                         last_seq: int | None, lie: str | None) -> None:
    if lie is None:
        check_repair_page(after, limit, seqs, last_seq)
        return
    with pytest.raises(FederationError) as caught:
        check_repair_page(after, limit, seqs, last_seq)
    assert caught.value.code == "SW_FED_BAD_RESPONSE" and lie in caught.value.message
