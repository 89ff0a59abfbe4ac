"""Edits and deletes as tables of cases: who may change which event, here and over
federation (swfed.core.rooms; issue 20). No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from swfed.core.errors import FederationError, SwfedError
from swfed.core.events import check_federated_event
from swfed.core.policy import Policy
from swfed.core.rooms import (
    DELETED,
    NOT_ALLOWED,
    NOT_FOUND,
    DeleteEvent,
    EditMessage,
    Facts,
    Room,
    Target,
    admit,
    change_refusal,
    check_local_change,
    effects,
    relation_target,
    vouched_admin,
)

ROOM = Room("!abcdefgh:h.test", "r", "standard", True, "h.test", "@creator:h.test", 0, True)
MSG = Target("message", "@bob:m.test")
REACTION = Target("reaction", "@bob:m.test")
T = "11111111-2222-4333-8444-555555555555"

CHANGE_CASES = [
    ("the sender edits", "edit", "@bob:m.test", MSG, False, None),
    ("nobody else edits, not the creator", "edit", "@creator:h.test", MSG, False, NOT_ALLOWED),
    ("nor an admin", "edit", "@root:h.test", MSG, True, NOT_ALLOWED),
    ("a reaction is not edited", "edit", "@bob:m.test", REACTION, False, NOT_FOUND),
    ("an unknown target", "edit", "@bob:m.test", None, False, NOT_FOUND),
    ("a deleted message is not edited", "edit", "@bob:m.test",
     Target("message", "@bob:m.test", True), False, DELETED),
    ("the sender deletes", "delete", "@bob:m.test", MSG, False, None),
    ("the creator deletes", "delete", "@creator:h.test", MSG, False, None),
    ("a tenant admin of the host deletes", "delete", "@root:h.test", MSG, True, None),
    ("another member does not", "delete", "@eve:m.test", MSG, False, NOT_ALLOWED),
    ("the sender takes a reaction off", "delete", "@bob:m.test", REACTION, False, None),
    ("a member event is not deleted", "delete", "@bob:m.test",
     Target("member", "@bob:m.test"), False, NOT_FOUND),
    ("twice is once too many", "delete", "@bob:m.test",
     Target("message", "@bob:m.test", True), False, DELETED),
]


@pytest.mark.parametrize(("what", "kind", "actor", "target", "admin", "why"), CHANGE_CASES,
                         ids=[c[0] for c in CHANGE_CASES])
def test_change_refusal(what: str, kind: str, actor: str, target: Target | None,
                        admin: bool, why: str | None) -> None:
    assert change_refusal(kind, actor, target, ROOM, admin) == why


@pytest.mark.parametrize(("kind", "actor", "target", "code"), [
    ("edit", "@eve:m.test", MSG, "SW_NOT_SENDER"),
    ("delete", "@eve:m.test", MSG, "SW_NOT_ROOM_ADMIN"),
    ("edit", "@bob:m.test", None, "SW_EVENT_NOT_FOUND"),
    ("delete", "@bob:m.test", Target("message", "@bob:m.test", True), "SW_EVENT_DELETED"),
])
def test_local_change_codes(kind: str, actor: str, target: Target | None, code: str) -> None:
    with pytest.raises(SwfedError) as exc:
        check_local_change(kind, actor, target, ROOM, False, T)
    assert exc.value.code == code


@pytest.mark.parametrize(("me", "sender", "local_admin", "vouched"), [
    ("h.test", "@root:h.test", True, True),      # the host knows its admins
    ("h.test", "@bob:h.test", False, False),
    ("h.test", "@root:m.test", True, False),     # nobody else's
    ("m.test", "@anyone:h.test", False, True),   # a member server takes the host's word
    ("m.test", "@root:m.test", True, False),     # ...and not its own admins'
])
def test_vouched_admin(me: str, sender: str, local_admin: bool, vouched: bool) -> None:
    assert vouched_admin(ROOM, me, sender, local_admin) is vouched


def change(type_: str, sender: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": "e", "room_id": ROOM.room_id, "type": type_, "sender": sender,
            "origin": sender.partition(":")[2], "origin_ts": 7, "content": content}


def facts(me: str, origin: str, target: Target | None, *, admin: bool = False,
          held: bool = True) -> Facts:
    return Facts(me=me, request_origin=origin, room=ROOM, policy=Policy(default_mode="open"),
                 sender_membership="join", target_held=held, target=target,
                 sender_is_admin=admin)


ADMIT_CASES = [
    ("the host takes a member's edit of its own message",
     change("edit", "@bob:m.test", {"relates_to": T, "body": "x"}), facts("h.test", "m.test", MSG),
     None),
    ("the host refuses an edit of another's message",
     change("edit", "@eve:m.test", {"relates_to": T, "body": "x"}), facts("h.test", "m.test", MSG),
     "SW_FED_NOT_ALLOWED"),
    ("the host refuses a delete by a mere member",
     change("delete", "@eve:m.test", {"relates_to": T}), facts("h.test", "m.test", MSG),
     "SW_FED_NOT_ALLOWED"),
    ("the host refuses a change of an event it does not hold",
     change("delete", "@bob:m.test", {"relates_to": T}),
     facts("h.test", "m.test", None, held=False), "SW_FED_TARGET_NOT_FOUND"),
    ("a member server refuses a relayed edit by a non-sender",
     change("edit", "@mal:h.test", {"relates_to": T, "body": "x"}),
     facts("m.test", "h.test", MSG, admin=True), "SW_FED_NOT_ALLOWED"),
    ("a member server obeys the host's delete of its own user's message",
     change("delete", "@mod:h.test", {"relates_to": T}),
     facts("m.test", "h.test", MSG, admin=True), None),
    ("a member server refuses a relayed delete by a third server's member",
     change("delete", "@eve:x.test", {"relates_to": T}), facts("m.test", "h.test", MSG),
     "SW_FED_NOT_ALLOWED"),
    ("a member server without the target cannot judge: it takes it (and applies nothing)",
     change("edit", "@mal:h.test", {"relates_to": T, "body": "x"}),
     facts("m.test", "h.test", None), None),
]


@pytest.mark.parametrize(("what", "ev", "f", "code"), ADMIT_CASES,
                         ids=[c[0] for c in ADMIT_CASES])
def test_admit_changes(what: str, ev: dict[str, Any], f: Facts, code: str | None) -> None:
    if code is None:
        admit(ev, f)
        return
    with pytest.raises(FederationError) as exc:
        admit(ev, f)
    assert exc.value.code == code


def test_effects_and_targets_of_changes() -> None:
    edit = change("edit", "@bob:m.test", {"relates_to": T, "body": "new",
                                          "mentions": ["@a:h.test", "@a:h.test"]})
    assert effects(edit, "h.test", {}) == [EditMessage(T, "new", ["@a:h.test"], 7)]
    delete = change("delete", "@bob:m.test", {"relates_to": T})
    assert effects(delete, "m.test", {}) == [DeleteEvent(T, "@bob:m.test", 7)]
    assert relation_target(edit) == relation_target(delete) == T


@pytest.mark.parametrize(("type_", "content", "ok"), [
    ("edit", {"relates_to": T, "body": "x"}, True),
    ("edit", {"relates_to": T}, False),
    ("edit", {"relates_to": "not an id", "body": "x"}, False),
    ("edit", {"relates_to": T, "body": "x" * 40_000}, False),
    ("edit", {"relates_to": T, "body": "x", "mentions": "@a:h.test"}, False),
    ("delete", {"relates_to": T}, True),
    ("delete", {}, False),
])
def test_shape_of_changes(type_: str, content: dict[str, Any], ok: bool) -> None:
    ev = {**change(type_, "@bob:m.test", content), "event_id": T, "signatures": {}}
    if ok:
        assert check_federated_event(ev) is ev
        return
    with pytest.raises(FederationError) as exc:
        check_federated_event(ev)
    assert exc.value.code == "SW_FED_BAD_EVENT"


def tomb(**over: Any) -> dict[str, Any]:
    base = {"event_id": T, "room_id": ROOM.room_id, "type": "message", "sender": "@b:m.test",
            "origin": "m.test", "origin_ts": 1, "unsigned": {"seq": 4},
            "content": {"deleted": {"by": "@b:m.test", "at": 2, "event_id": T}}}
    return {**base, **over}


@pytest.mark.parametrize(("what", "ev", "ok"), [
    ("a message's tombstone", tomb(), True),
    ("a reaction's, with what it related to",
     tomb(type="reaction", content={"deleted": {"by": "@b:m.test", "at": 2, "event_id": T},
                                    "relates_to": T}), True),
    ("signed: an ordinary event, verified as one", tomb(signatures={}), False),
    ("words in it", tomb(content={"deleted": {"by": "@b:m.test", "at": 2, "event_id": T},
                                  "body": "smuggled"}), False),
    ("more in deleted", tomb(content={"deleted": {"by": "@b:m.test", "at": 2, "event_id": T,
                                                  "body": "smuggled"}}), False),
    ("a member event is never deleted", tomb(type="member"), False),
    ("no deleted", tomb(content={"body": "x"}), False),
    ("a bad event id", tomb(event_id="x"), False),
])
def test_check_tombstone(what: str, ev: dict[str, Any], ok: bool) -> None:
    from swfed.core.events import check_tombstone

    assert (check_tombstone(ev) is ev) is ok
