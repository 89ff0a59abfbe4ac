"""The room protocol's write transactions: read the facts, ask the rules, write.

Each public ``*_txn`` here is one named transaction of the room protocol
(run with ``State.act`` or ``Database.write``). None of them decides
anything on its own: who may do what, where an event goes and what it
changes are :mod:`swfed.core.rooms`; the tables are read and written through
the one-concern modules beside this one (rooms, members, events, invites,
notifications, stream, search, peers).

Every event, ours or received, takes one path, inside one transaction:
store it (idempotent on ``event_id``) → apply its effects → queue it for
the servers that must get it. So an event, its stream position, its search
entry, its effects and its outbox rows are stored together or not at all.

Visibility: a user sees a room's events and members while their membership
is ``join``. Rooms a user is not in answer exactly like rooms that do not
exist (``SW_ROOM_NOT_FOUND``), so ids cannot be probed.
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core import rooms as rules
from swfed.core.delivery import OUT_OF_ORDER
from swfed.core.errors import FederationError, NotFound, TooLarge
from swfed.core.events import (
    CHANGES,
    MAX_DISPLAY_NAME,
    MAX_EVENT_BYTES,
    MAX_INVITE_MEMBERS,
    MessageSpec,
    RoomSpec,
    check_tombstone,
    edit_content,
    event_size,
)
from swfed.core.ids import Fqid, new_room_id, new_uuid
from swfed.core.policy import decide_foreign_count, decide_peer, decide_room
from swfed.core.rooms import PENDING_SEQ, Room, room_not_found
from swfed.core.signing import signable_bytes
from swfed.storage import events as events_db
from swfed.storage import invites as invites_db
from swfed.storage import media as media_db
from swfed.storage import members as members_db
from swfed.storage import peers as peers_db
from swfed.storage import rooms as rooms_db
from swfed.storage.audit import accepted_audit_txn, audit_txn, reject_txn
from swfed.storage.conn import Conn
from swfed.storage.context import Ctx
from swfed.storage.notifications import add_notification_txn, drop_event_notifications_txn
from swfed.storage.search import index_bodies_txn, unindex_body_txn
from swfed.storage.stream import next_pos_txn, take_positions_txn
from swfed.storage.tenants import Tenant, user_txn

#: The most members a host's membership answer may list that we take.
MAX_STATE_MEMBERS = 10_000

#: A refused event: (event id or "#index", room id, why).
Refusal = tuple[str, str | None, FederationError]


def no_key() -> FederationError:
    return FederationError("this server has no federation key: run "
                           "'swfed admin federation key generate'", code="SW_FED_NO_KEY",
                           status=503)


# -- the event path ------------------------------------------------------------


def _store(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any],
           signed: dict[str, Any] | None, host_seq: int | None = None, *,
           applied: bool = True, new: bool = False) -> int | None:
    """Store one event; return its seq, or None if it was already stored.

    Raises SW_FED_SEQ_TAKEN when ``host_seq`` already names another event here.

    The seq is the host's order: taken here if we host the room, else the one
    the host gave (``host_seq``), else pending until the host answers.
    ``applied=False``: its effects wait for the synced mark (:func:`_advance`).
    ``new``: the caller has just looked the id up in this transaction.
    """
    if not new and events_db.has_event_txn(conn, ctx.tenant, room.room_id, event["event_id"]):
        return None
    if host_seq is not None and room.host != ctx.me and (holder := events_db.event_at_seq_txn(
            conn, ctx.tenant, room.room_id, host_seq)) is not None:
        raise rules.seq_taken(room.room_id, host_seq, holder)
    pos = next_pos_txn(conn, ctx.tenant)
    status = "sent"
    if room.host == ctx.me:
        seq = rooms_db.next_seq_txn(conn, ctx.tenant, room.room_id)
    elif host_seq is not None:
        seq = host_seq
    else:
        # ours, in a room hosted elsewhere: pending until the host answers
        seq, status = PENDING_SEQ + pos, "pending"
    rowid = events_db.insert_event_txn(conn, ctx.tenant, event, signed, seq, pos, ctx.now,
                                       status, applied)
    media_db.reference_txn(conn, ctx.tenant, event, ctx.now)  # files it names (issue 21)
    body = event["content"].get("body") if event["type"] == "message" else None
    if isinstance(body, str):
        index_bodies_txn(conn, [(rowid, body)])
    return seq


def _apply(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any]) -> None:
    """Write the effects (core.rooms.effects) of a newly stored event."""
    members = rules.touched_members(event)
    touched = members_db.memberships_txn(conn, ctx.tenant, room.room_id,
                                         members) if members else {}
    for effect in rules.effects(event, ctx.me, touched):
        if isinstance(effect, rules.SetMembership):
            members_db.set_membership_txn(conn, ctx.tenant, room.room_id, effect.member,
                                          effect.membership, ctx.now, effect.display_name)
        elif isinstance(effect, rules.RecordInvite):
            new = invites_db.add_invite_txn(conn, ctx.tenant, room, effect.invite_id,
                                            effect.invitee, effect.inviter, event["event_id"],
                                            ctx.now)
            if new and effect.notify is not None:
                add_notification_txn(conn, ctx.tenant, effect.notify, "invite", effect.inviter,
                                     ctx.now, next_pos_txn(conn, ctx.tenant),
                                     room_id=room.room_id, invite_id=effect.invite_id)
        elif isinstance(effect, rules.CloseInvites):
            invites_db.close_invites_txn(conn, ctx.tenant, room.room_id, effect.invitee,
                                         effect.state)
        elif isinstance(effect, rules.EndInvite):
            invites_db.end_invite_txn(conn, ctx.tenant, room.room_id, effect.invite_id,
                                      effect.state)
        elif isinstance(effect, rules.Notify):
            add_notification_txn(conn, ctx.tenant, effect.local_id, effect.type, effect.sender,
                                 ctx.now, next_pos_txn(conn, ctx.tenant), room_id=room.room_id,
                                 event_id=event["event_id"], details=effect.details)
        elif isinstance(effect, rules.EditMessage | rules.DeleteEvent):
            _change(conn, ctx, room, event, effect)


def _history_change(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any]) -> None:
    """History re-runs no effects (no notifications for old mentions), but an edit or
    delete in it still changes its target: no copy keeps a deleted message's words."""
    for effect in rules.effects(event, ctx.me, {}) if event["type"] in CHANGES else []:
        if isinstance(effect, rules.EditMessage | rules.DeleteEvent):
            _change(conn, ctx, room, event, effect)


def _target(conn: Conn, ctx: Ctx, room_id: str,
            event_id: str) -> tuple[int, dict[str, Any], rules.Target] | None:
    """The event an edit or delete points at, with what the rules need to know of it."""
    found = events_db.change_target_txn(conn, ctx.tenant, room_id, event_id)
    if found is None or found[1]["status"] == "refused":
        return None
    rowid, shown = found
    return rowid, shown, rules.Target(shown["type"], shown["sender"],
                                      "deleted" in shown["content"])


def _sender_is_admin(conn: Conn, ctx: Ctx, room: Room, sender: str) -> bool:
    local = (rules.server_of(sender) == ctx.me
             and (user := user_txn(conn, ctx.tenant, rules.local_part(sender))) is not None
             and user.admin)
    return rules.vouched_admin(room, ctx.me, sender, bool(local))


def _older_edit(conn: Conn, ctx: Ctx, room: Room, shown: dict[str, Any],
                edit: dict[str, Any]) -> bool:
    """Is ``edit`` ordered before the edit the message shows now?"""
    current = shown["content"].get("edit_id")
    if not isinstance(current, str):
        return False
    now = events_db.event_in_room_txn(conn, ctx.tenant, room.room_id, current)
    this = events_db.event_in_room_txn(conn, ctx.tenant, room.room_id, edit["event_id"])
    return now is not None and this is not None and this["seq"] < now["seq"]


def _change(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any],
            effect: rules.EditMessage | rules.DeleteEvent) -> None:
    """Apply an edit or delete to its target, if the rules let its sender (asked again
    here: a copy that did not hold the target when the event came may hold it now)."""
    found = _target(conn, ctx, room.room_id, effect.target)
    kind = event["type"]
    if found is None or rules.change_refusal(
            kind, event["sender"], found[2], room,
            _sender_is_admin(conn, ctx, room, event["sender"])) is not None:
        return
    rowid, shown, _ = found
    if isinstance(effect, rules.EditMessage) and _older_edit(conn, ctx, room, shown, event):
        return  # history brought an edit older than the one shown
    pos = next_pos_txn(conn, ctx.tenant)
    if isinstance(effect, rules.EditMessage):
        content = {k: v for k, v in shown["content"].items() if k not in ("body", "mentions")}
        content.update(body=effect.body, edited_at=effect.at, edit_id=event["event_id"])
        if effect.mentions:
            content["mentions"] = effect.mentions
        events_db.set_shown_txn(conn, ctx.tenant, room.room_id, effect.target, content, pos)
        unindex_body_txn(conn, rowid)
        index_bodies_txn(conn, [(rowid, effect.body)])
        return
    tombstone: dict[str, Any] = {"deleted": {"by": effect.by, "at": effect.at,
                                             "event_id": event["event_id"]}}
    if shown["type"] == "reaction":
        tombstone["relates_to"] = shown["content"].get("relates_to")
    events_db.set_shown_txn(conn, ctx.tenant, room.room_id, effect.target, tombstone, pos,
                            drop_signed=True)
    unindex_body_txn(conn, rowid)
    drop_event_notifications_txn(conn, ctx.tenant, room.room_id, effect.target)
    # its files: collected once no other event names them (issue 21)
    media_db.release_event_txn(conn, ctx.tenant, effect.target)
    # the edit history goes with it: no copy keeps a word of it
    for edit_id, _ in events_db.edits_of_txn(conn, ctx.tenant, room.room_id,
                                                    effect.target):
        events_db.set_shown_txn(conn, ctx.tenant, room.room_id, edit_id,
                                {"deleted": tombstone["deleted"], "relates_to": effect.target},
                                next_pos_txn(conn, ctx.tenant), drop_signed=True)


def _route(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any],
           signed: dict[str, Any] | None, seq: int) -> None:
    """Queue the event for the servers that must get it (core.rooms.route_targets)."""
    # only a host relays to its member servers: a copy hosted elsewhere needs no read
    members = (members_db.member_servers_txn(conn, ctx.tenant, room.room_id)
               if room.host == ctx.me else set())
    targets = rules.route_targets(room, event, ctx.me, members)
    if targets and signed is None:
        raise no_key()
    if targets:
        assert signed is not None
        payload = {**signed, "unsigned": {"seq": seq}} if room.host == ctx.me else signed
        peers_db.enqueue_txn(conn, ctx.tenant.tenant_id, sorted(targets), payload, ctx.now)


def _take(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any],
          signed: dict[str, Any] | None, host_seq: int | None = None, *,
          route: bool = True, new: bool = False) -> int:
    """Store, apply and (unless told not to) route a new event; returns its seq.

    In a room hosted elsewhere whose copy has a start (synced_seq), a
    host-ordered event's effects are written in the host's order, when the
    synced mark moves over it (:func:`_synced`): applying a late event
    after a newer one would undo the newer one's effects.
    """
    in_order = host_seq is not None and room.host != ctx.me and room.synced_seq > 0
    if (in_order and host_seq is not None and host_seq > room.synced_seq + 1
            and rules.restarts_copy(room.synced_seq, host_seq, members_db.local_joined_txn(
                conn, ctx.tenant, room.room_id))):
        # none of ours is in: what lies before (say, a re-invite) is not owed
        rooms_db.set_synced_txn(conn, ctx.tenant, room.room_id, host_seq - 1)
        room = attrs.evolve(room, synced_seq=host_seq - 1)
    # the very next one (the usual case): applied now, the mark moves over it
    next_in_line = in_order and host_seq == room.synced_seq + 1
    # our edit or delete in a room hosted elsewhere changes nothing until the host
    # orders it (settle_txn): a refused one never did
    ours_unordered = (room.host != ctx.me and host_seq is None
                      and event["type"] in CHANGES)
    apply_now = (not in_order or next_in_line) and not ours_unordered
    seq = _store(conn, ctx, room, event, signed, host_seq, applied=apply_now, new=new)
    assert seq is not None
    if apply_now:
        _apply(conn, ctx, room, event)
    if route:
        _route(conn, ctx, room, event, signed, seq)
    if host_seq is not None:
        _synced(conn, ctx, room, host_seq, applied=next_in_line)
    return seq


def _advance(conn: Conn, ctx: Ctx, room: Room, start: int | None = None) -> int:
    """Move the room's synced mark over every contiguous host seq we hold; returns it.

    Each event it moves over has its effects written now, if they wait.
    ``start``: where our copy begins (our server's first join), if later.
    """
    synced = max(room.synced_seq, start or 0)
    while (found := events_db.at_seq_txn(conn, ctx.tenant, room.room_id, synced + 1)):
        event, applied = found
        if not applied:
            _apply(conn, ctx, room, event)
            events_db.mark_applied_txn(conn, ctx.tenant, room.room_id, event["event_id"])
        synced += 1
    if synced != room.synced_seq:
        rooms_db.set_synced_txn(conn, ctx.tenant, room.room_id, synced)
    return synced


def _synced(conn: Conn, ctx: Ctx, room: Room, seq: int, *,
            applied: bool = False) -> None:
    """A host-ordered event arrived in a room hosted elsewhere: move the synced mark.

    An event beyond the next expected number is a gap: the room is marked
    for repair (fetched from the host after the commit). Before our first
    join is settled (synced_seq 0) there is no start to repair from.
    ``applied``: the event was the next one and its effects are written: the
    mark moves over it without reading it back.
    """
    if room.synced_seq == 0:
        return
    synced = _advance(conn, ctx, room, start=seq if applied else None)
    if max(seq, events_db.max_host_seq_txn(conn, ctx.tenant, room.room_id)) > synced:
        conn.touched.repair(ctx.tenant.tenant_id, room.room_id)


def emit_txn(conn: Conn, ctx: Ctx, room: Room, type_: str, sender: str,
             content: dict[str, Any]) -> dict[str, Any]:
    """Create an event of ours: sign, store, apply, route. Returns the event."""
    event = {"event_id": new_uuid(), "room_id": room.room_id, "type": type_,
             "sender": sender, "origin": ctx.me, "origin_ts": ctx.now, "content": content}
    signable = signable_bytes(event)
    signed = ctx.sign(event, signable) if ctx.sign is not None else None
    size = event_size(signed or event, signable)
    if size > MAX_EVENT_BYTES:
        raise TooLarge(f"the event would be {size} bytes, over the limit of {MAX_EVENT_BYTES} "
                       "(peers refuse larger ones): send a shorter message",
                       code="SW_EVENT_TOO_LARGE")
    _take(conn, ctx, room, event, signed)
    return event


# -- what local users do ---------------------------------------------------------


def create_room_txn(conn: Conn, ctx: Ctx, spec: RoomSpec, creator: str,
                    display_name: str) -> Room:
    room_id = new_room_id(ctx.me)
    rooms_db.insert_room_txn(conn, ctx.tenant, Room(room_id, spec.name, spec.type,
                                                    spec.federate, ctx.me, creator, ctx.now,
                                                    False))
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    assert room is not None
    emit_txn(conn, ctx, room, "member", creator,
             {"membership": "join", "display_name": display_name, "name": spec.name,
              "room_type": spec.type})
    return room


def create_dm_txn(conn: Conn, ctx: Ctx, creator: str, display_name: str,
                  invitee: Fqid) -> Room:
    """A federated 1:1 room and the invite of its foreign participant, atomically."""
    spec = RoomSpec(name=f"{creator} & {invitee}"[:200], type="dm", federate=True)
    room = create_room_txn(conn, ctx, spec, creator, display_name)
    invite_txn(conn, ctx, room.room_id, creator, invitee)
    found = rooms_db.room_txn(conn, ctx.tenant, room.room_id)
    assert found is not None
    return found


def send_message_txn(conn: Conn, ctx: Ctx, room_id: str, sender: str,
                     spec: MessageSpec) -> dict[str, Any]:
    """Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND (reply target)."""
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, sender)
    if spec.in_reply_to is not None and events_db.event_in_room_txn(
            conn, ctx.tenant, room_id, spec.in_reply_to) is None:
        raise NotFound(f"in_reply_to: no event {spec.in_reply_to} in this room",
                       code="SW_EVENT_NOT_FOUND")
    content = spec.content(ctx.me)
    if spec.attachments:
        content["attachments"] = media_db.resolve_attachments_txn(conn, ctx.tenant, sender,
                                                                  spec.attachments)
    return emit_txn(conn, ctx, room, "message", sender, content)


def react_txn(conn: Conn, ctx: Ctx, room_id: str, sender: str, target: str,
              key: str) -> tuple[dict[str, Any], bool]:
    """React to a message: the reaction, and whether it is new (reacting twice with
    the same key returns the first, not created again)."""
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, sender)
    target_event = events_db.event_in_room_txn(conn, ctx.tenant, room_id, target)
    if target_event is None or target_event["type"] != "message":
        raise NotFound(f"no message {target} in this room", code="SW_EVENT_NOT_FOUND")
    content = {"relates_to": target, "key": key}
    earlier = events_db.reaction_of_txn(conn, ctx.tenant, room_id, sender, content)
    if earlier is not None:
        return earlier, False
    return emit_txn(conn, ctx, room, "reaction", sender, content), True


def edit_txn(conn: Conn, ctx: Ctx, room_id: str, sender: str, target: str,
             spec: MessageSpec) -> dict[str, Any]:
    """Edit one's own message. Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND,
    SW_EVENT_DELETED, SW_NOT_SENDER."""
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, sender)
    found = _target(conn, ctx, room_id, target)
    rules.check_local_change("edit", sender, found[2] if found else None, room, False, target)
    return emit_txn(conn, ctx, room, "edit", sender, edit_content(target, spec))


def delete_txn(conn: Conn, ctx: Ctx, room_id: str, actor: str, target: str,
               actor_is_admin: bool) -> dict[str, Any]:
    """Delete a message or reaction (its sender, the room's creator, a tenant admin of
    the host). Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND, SW_EVENT_DELETED,
    SW_NOT_ROOM_ADMIN."""
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, actor)
    found = _target(conn, ctx, room_id, target)
    rules.check_local_change("delete", actor, found[2] if found else None, room,
                             rules.vouched_admin(room, ctx.me, actor, actor_is_admin), target)
    return emit_txn(conn, ctx, room, "delete", actor, {"relates_to": target})


def unreact_txn(conn: Conn, ctx: Ctx, room_id: str, sender: str, target: str,
                key: str) -> dict[str, Any]:
    """Take one's reaction ``key`` off a message: a delete of that reaction.
    Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND (no such reaction of yours)."""
    rooms_db.joined_room_txn(conn, ctx.tenant, room_id, sender)
    reaction = events_db.reaction_of_txn(conn, ctx.tenant, room_id, sender,
                                         {"relates_to": target, "key": key})
    if reaction is None or reaction["status"] == "refused":
        raise NotFound(f"you have no reaction {key!r} on message {target}",
                       code="SW_EVENT_NOT_FOUND")
    return delete_txn(conn, ctx, room_id, sender, reaction["event_id"], False)


def messages_page_txn(conn: Conn, tenant: Tenant, room_id: str, viewer: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Events newest first (host order) for a joined ``viewer``."""
    rooms_db.joined_room_txn(conn, tenant, room_id, viewer)
    return events_db.messages_page_txn(conn, tenant, room_id, viewer, before, limit)


def invite_txn(conn: Conn, ctx: Ctx, room_id: str, inviter: str,
               invitee: Fqid) -> dict[str, Any]:
    """Invite someone, local or foreign, into a room we host; idempotent while pending.

    ``inviter`` is a joined member, ours or (asked through its server, see
    :func:`remote_invite_txn`) of another server. Raises SW_ROOM_NOT_FOUND,
    SW_USER_NOT_FOUND, SW_ALREADY_MEMBER, SW_NOT_HOST and, for a foreign
    invitee, the policy's SW_FED_… refusals.
    """
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, inviter)
    target = str(invitee)
    rules.check_invite(room, ctx.me, target,
                       members_db.membership_txn(conn, ctx.tenant, room_id, target))
    if invitee.server_name == ctx.me and user_txn(conn, ctx.tenant, invitee.local_id) is None:
        raise NotFound(f"no user {invitee.display(ctx.me)} on this server",
                       code="SW_USER_NOT_FOUND")
    pending = invites_db.pending_invite_to_room_txn(conn, ctx.tenant, room_id, target)
    if pending is not None:
        return {"invite_id": pending, "room_id": room_id}
    content: dict[str, Any] = {"invitee": target, "invite_id": new_uuid(),
                               "room_name": room.name, "room_type": room.type}
    if invitee.server_name != ctx.me:
        decide_room(room.type, room.federate)
        decide_peer(ctx.tenant.policy, invitee.server_name)
        decide_foreign_count(ctx.tenant.policy,
                             members_db.foreign_count_txn(conn, ctx.tenant, room_id) + 1)
        if ctx.sign is None:
            raise no_key()
        # what the invitee's server needs to apply its foreign-participant limit
        content["members"] = members_db.joined_members_txn(
            conn, ctx.tenant, room_id)[:MAX_INVITE_MEMBERS]
    emit_txn(conn, ctx, room, "invite", inviter, content)
    return {"invite_id": content["invite_id"], "room_id": room_id}


def remote_invite_txn(conn: Conn, ctx: Ctx, origin: str, room_id: str,
                      inviter: str, invitee: Fqid) -> dict[str, Any]:
    """A member on ``origin`` invites someone into a room we host, through its server.

    Our rules apply as for our own members; raises SW_FED_NOT_MEMBER when the
    inviter is not a joined member of ``origin``.
    """
    hosted_room_for_peer_txn(conn, ctx.tenant, room_id, origin)
    rules.check_remote_inviter(room_id, origin, inviter,
                               members_db.membership_txn(conn, ctx.tenant, room_id, inviter))
    return invite_txn(conn, ctx, room_id, inviter, invitee)


def cancel_invite_txn(conn: Conn, ctx: Ctx, room_id: str, invite_id: str,
                      actor: str, actor_is_admin: bool) -> dict[str, Any]:
    """Cancel a pending invite into a room we host (its inviter, the creator, an admin).

    The invitee is no longer invited, here and on every server that knew
    (an ``uninvite`` event). Raises SW_INVITE_NOT_FOUND, SW_INVITE_NOT_PENDING,
    SW_NOT_ROOM_ADMIN.
    """
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, actor)
    row = invites_db.invite_txn(conn, ctx.tenant, room_id, invite_id)
    if row is None:
        raise NotFound(f"no invite {invite_id} in this room", code="SW_INVITE_NOT_FOUND")
    rules.check_cancel_invite(room, ctx.me, row["inviter"], row["state"], actor,
                              actor_is_admin)
    emit_txn(conn, ctx, room, "uninvite", actor, {
        "invitee": row["invitee"], "invite_id": invite_id, "reason": rules.CANCELLED})
    return {"invite_id": invite_id, "room_id": room_id, "state": "cancelled"}


def remote_cancel_txn(conn: Conn, ctx: Ctx, origin: str, room_id: str,
                      invite_id: str, actor: str) -> dict[str, Any]:
    """A member on ``origin`` cancels an invite (its own, or as the room's creator)."""
    hosted_room_for_peer_txn(conn, ctx.tenant, room_id, origin)
    return cancel_invite_txn(conn, ctx, room_id, invite_id, actor, False)


def end_refused_invite_txn(conn: Conn, ctx: Ctx, payload: dict[str, Any],
                           error: dict[str, str], refused_by: str) -> None:
    """The invitee's server refused an invite we sent: the invite ends (an ``uninvite``).

    The invitee is no longer invited (member list, foreign-participant
    count), and the inviter is told, with the peer's code. Another member
    server refusing the relayed invite (``refused_by``) only refused to store
    it: the invite goes on (:func:`swfed.core.rooms.refusal_ends_invite`).
    """
    if not rules.refusal_ends_invite(payload, refused_by):
        return
    content = payload.get("content") or {}
    invite_id = content.get("invite_id")
    room = rooms_db.room_txn(conn, ctx.tenant, str(payload.get("room_id")))
    row = (invites_db.invite_txn(conn, ctx.tenant, room.room_id, str(invite_id))
           if room is not None else None)
    if room is None or room.host != ctx.me or row is None or row["state"] != "pending":
        return
    emit_txn(conn, ctx, room, "uninvite", row["inviter"], {
        "invitee": row["invitee"], "invite_id": row["invite_id"],
        "reason": error.get("code", "SW_FED_ERROR"), "message": error.get("message", "")[:500]})


def answer_invite_txn(conn: Conn, ctx: Ctx, invite_id: str, invitee: str,
                      accept: bool, display_name: str, room_id: str | None = None) -> str:
    """Accept or decline a pending invite to a room we host; returns the room id.

    (In a room hosted elsewhere the answer goes to the host first: see
    :func:`membership_event_txn` and :func:`apply_membership_txn`.)
    ``room_id``: which room's invite, when the id is not enough.
    """
    row = invites_db.pending_invite_txn(conn, ctx.tenant, invite_id, invitee, room_id)
    room = rooms_db.room_txn(conn, ctx.tenant, row["room_id"])
    if room is None:
        raise room_not_found(row["room_id"])
    emit_txn(conn, ctx, room, "member", invitee,
             _answer_content(invite_id, accept, display_name))
    return room.room_id


def _answer_content(invite_id: str, accept: bool, display_name: str) -> dict[str, Any]:
    content: dict[str, Any] = {"membership": "join" if accept else "decline",
                               "invite_id": invite_id}
    if accept:
        content["display_name"] = display_name
    return content


def join_txn(conn: Conn, ctx: Ctx, room_id: str, member: str,
             display_name: str) -> str:
    """Join a room: accepts the member's pending invite to it.

    Raises SW_ROOM_NOT_FOUND when there is none (rooms are invite-only).
    """
    if members_db.membership_txn(conn, ctx.tenant, room_id, member) == "join":
        return room_id
    invite_id = invites_db.pending_invite_to_room_txn(conn, ctx.tenant, room_id, member)
    if invite_id is None:
        raise room_not_found(room_id)
    return answer_invite_txn(conn, ctx, invite_id, member, True, display_name, room_id)


def leave_txn(conn: Conn, ctx: Ctx, room_id: str, member: str) -> None:
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, member)
    emit_txn(conn, ctx, room, "member", member, {"membership": "leave"})


# -- membership of rooms hosted elsewhere: through the host, synchronously ----------


def membership_event_txn(conn: Conn, ctx: Ctx, action: str, member: str, *,
                         room_id: str | None = None, invite_id: str | None = None,
                         display_name: str = "") -> tuple[Room, dict[str, Any]] | None:
    """The signed member event for ``action`` (accept, decline, join, leave), not stored.

    Runs as a read: nothing changes here until the host has ordered the
    event (:func:`apply_membership_txn`). Returns None when we host the room
    (the local path applies) or when there is nothing to do (joining a room
    one is in). Raises what the local path would: SW_INVITE_NOT_FOUND,
    SW_INVITE_NOT_PENDING, SW_ROOM_NOT_FOUND, SW_FED_ROOM_NOT_FEDERATED.
    """
    if action in ("accept", "decline"):
        assert invite_id is not None
        row = invites_db.pending_invite_txn(conn, ctx.tenant, invite_id, member, room_id)
        room_id = str(row["room_id"])
    assert room_id is not None
    current = members_db.membership_txn(conn, ctx.tenant, room_id, member)
    if action == "join":
        if current == "join":
            return None
        invite_id = invites_db.pending_invite_to_room_txn(conn, ctx.tenant, room_id, member)
        if invite_id is None:
            raise room_not_found(room_id)
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    if room is None or (action == "leave" and current != "join"):
        raise room_not_found(room_id)
    if room.host == ctx.me:
        return None
    rules.check_room_federates(room, ctx.me)
    if ctx.sign is None:
        raise no_key()
    if action == "leave":
        content: dict[str, Any] = {"membership": "leave"}
    else:
        assert invite_id is not None
        content = _answer_content(invite_id, action != "decline", display_name)
    event = {"event_id": new_uuid(), "room_id": room_id, "type": "member", "sender": member,
             "origin": ctx.me, "origin_ts": ctx.now, "content": content}
    return room, ctx.sign(event)


def host_membership_txn(conn: Conn, ctx: Ctx, origin: str,
                        event: dict[str, Any], state_events: int) -> dict[str, Any]:
    """The host orders a member event a member server sent synchronously.

    Answers the event's ``seq``; for a join also the room's state — its
    members and its newest events, those of the caller's current span
    and at most ``max_backfill_events_per_request`` older ones (of at most
    ``state_events``; :func:`swfed.core.rules.state_answer`) — so the member's
    copy starts equal to ours. A leave or decline needs nothing more. A
    replay answers the same seq.
    """
    if event["type"] != "member":
        raise FederationError("membership requests carry a member event",
                              code="SW_FED_BAD_REQUEST", status=400)
    room = rooms_db.room_txn(conn, ctx.tenant, event["room_id"])
    if room is None or room.host != ctx.me:
        raise FederationError(f"no room {event['room_id']} hosted here",
                              code="SW_FED_UNKNOWN_ROOM", status=404)
    result = receive_event_txn(conn, ctx, origin, event)
    audit_txn(conn, ctx.tenant, "federation.event.accepted", ctx.now, outcome="ok",
              peer=origin, event_id=event["event_id"], room_id=event["room_id"])
    peers_db.count_txn(conn, ctx.tenant.tenant_id, origin, ctx.now, received=1)
    answer: dict[str, Any] = {"seq": result["seq"],
                              "last_seq": rooms_db.last_seq_txn(conn, ctx.tenant, room.room_id),
                              "members": [], "events": []}
    owed = rules.state_answer(str(event["content"].get("membership")), ctx.tenant.policy,
                              state_events)
    if owed.members:
        answer["members"] = members_db.members_for_peer_txn(conn, ctx.tenant, room.room_id)
        span = rules.span_start(events_db.member_events_of_txn(conn, ctx.tenant,
                                                               room.room_id, origin))
        newest, _ = events_db.signed_page_txn(conn, ctx.tenant, room.room_id, None,
                                              state_events)
        answer["events"] = rules.state_events(newest, span, owed.history)
    return answer


def apply_membership_txn(conn: Conn, ctx: Ctx, signed: dict[str, Any],
                         seq: int, members: list[Any],
                         events: list[dict[str, Any]]) -> list[str]:
    """The host ordered our member event: take it, and the room's state it answered.

    ``members``: the host's member list as of ``seq``, of which only foreign
    members are taken (:func:`swfed.core.rooms.members_from_host`);
    ``events``: its newest events up to ``seq`` (verified by the caller).
    Events of the room that reached us before this (ordered after ``seq``)
    are moved after it in the stream, so a new member's stream misses none.
    A join while none of ours was in starts the copy at ``seq``: what was
    said meanwhile is history, not a gap. Returns the users of ours the host
    listed without their own action (ignored: the caller logs the lie).
    """
    room = rooms_db.room_txn(conn, ctx.tenant, signed["room_id"])
    if room is None:
        raise room_not_found(signed["room_id"])
    if events_db.has_event_txn(conn, ctx.tenant, room.room_id, signed["event_id"]):
        return []
    membership = str(signed["content"].get("membership"))
    start = rules.membership_start(room.synced_seq, seq, membership,
                                   members_db.local_joined_txn(conn, ctx.tenant, room.room_id))
    lies: list[str] = []
    if membership == "join":
        # The answer's newest events up to ``seq``. Where our copy goes on, those
        # past our mark are the gap: their effects (an invite of a user of ours, a
        # mention) are written in the host's order, before the join's and before
        # the member list taken as of ``seq``; only what precedes a new start is
        # history, stored without effects (but its edits and deletes: _history_change).
        for event_seq, clean in _in_host_order(events):
            if event_seq < seq:
                history = start is not None or event_seq <= room.synced_seq
                if (_store_unless_taken(conn, ctx, room, clean, event_seq, applied=history)
                        is None and history):
                    _history_change(conn, ctx, room, clean)
        if start is None:
            room = attrs.evolve(room, synced_seq=_advance(conn, ctx, room))
    _store(conn, ctx, room, signed, signed, seq)
    _apply(conn, ctx, room, signed)
    if membership == "join":
        lies = _take_members(conn, ctx, room, members)
        for event_id in events_db.events_after_seq_txn(conn, ctx.tenant, room.room_id, seq):
            events_db.set_pos_txn(conn, ctx.tenant, room.room_id, event_id,
                                  next_pos_txn(conn, ctx.tenant))
    synced = _advance(conn, ctx, room, start)
    if synced < seq:
        # away for a while: fetch what we missed
        conn.touched.repair(ctx.tenant.tenant_id, room.room_id)
    return lies


def _take_members(conn: Conn, ctx: Ctx, room: Room,
                  members: list[Any]) -> list[str]:
    """Make our copy's foreign members the host's; returns the host's lies about ours."""
    ours = [m.get("fqid") for m in members[:MAX_STATE_MEMBERS] if isinstance(m, dict)
            and isinstance(m.get("fqid"), str) and rules.server_of(m["fqid"]) == ctx.me]
    believed = rules.members_from_host(
        members, ctx.me, members_db.memberships_txn(conn, ctx.tenant, room.room_id, ours),
        MAX_STATE_MEMBERS)
    for fqid, (membership, name) in believed.take.items():
        members_db.set_membership_txn(conn, ctx.tenant, room.room_id, fqid, membership,
                                      ctx.now, name[:MAX_DISPLAY_NAME] if name else None)
    for m in members_db.members_for_peer_txn(conn, ctx.tenant, room.room_id):
        if m["fqid"] not in believed.take and rules.server_of(m["fqid"]) != ctx.me:
            members_db.set_membership_txn(conn, ctx.tenant, room.room_id, m["fqid"], "leave",
                                          ctx.now)
    return believed.lies


def settle_txn(conn: Conn, ctx: Ctx, room_id: str, event_id: str, *,
               seq: int | None = None, error: dict[str, str] | None = None) -> None:
    """The host answered for one of our pending events: ordered at ``seq``, or refused."""
    if not events_db.is_pending_txn(conn, ctx.tenant, room_id, event_id):
        return
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    if seq is not None and room is not None and room.host != ctx.me and (
            events_db.event_at_seq_txn(conn, ctx.tenant, room_id, seq) is not None):
        # the host gave our event a seq that names another one here: it stays
        # pending (the host's numbers cannot both be right)
        return
    events_db.settle_txn(conn, ctx.tenant, room_id, event_id, next_pos_txn(conn, ctx.tenant),
                         seq=seq, error=error)
    if seq is not None and room is not None:
        _synced(conn, ctx, room, seq)


def _store_unless_taken(conn: Conn, ctx: Ctx, room: Room, event: dict[str, Any],
                        seq: int, *, applied: bool = True) -> FederationError | None:
    """:func:`_store` host history; the refusal, if its seq names another event here."""
    signed = None if check_tombstone(event) is not None else event
    try:
        _store(conn, ctx, room, event, signed, seq, applied=applied)
    except FederationError as exc:
        return exc
    return None


def store_repair_txn(conn: Conn, ctx: Ctx, room_id: str,
                     events: list[dict[str, Any]]) -> tuple[int, list[Refusal]]:
    """Events the host ordered that we missed (gap repair), verified: the synced mark,
    and those refused here (SW_FED_SEQ_TAKEN: the seq names another event of ours).

    They take their place in the host's order and have their effects here
    (membership, notifications) in that order, as if relayed; they are not
    routed on. (Our own pending events are already here: skipped.)
    """
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    if room is None:
        raise room_not_found(room_id)
    refused: list[Refusal] = []
    if room.synced_seq > 0:
        for seq, clean in _in_host_order(events):
            exc = _store_unless_taken(conn, ctx, room, clean, seq, applied=False)
            if exc is not None:
                refused.append((clean["event_id"], room_id, exc))
    return _advance(conn, ctx, room), refused


def set_federate_txn(conn: Conn, ctx: Ctx, room_id: str, actor: str,
                     actor_is_admin: bool, federate: bool) -> Room:
    """Set this server's federate flag of a room (its creator or a tenant admin); audited."""
    room = rooms_db.joined_room_txn(conn, ctx.tenant, room_id, actor)
    rules.check_set_federate(room, actor, actor_is_admin, federate)
    rooms_db.set_federate_flag_txn(conn, ctx.tenant, room_id, federate)
    audit_txn(conn, ctx.tenant, "federation.room.federate", ctx.now, outcome="ok", actor=actor,
              room_id=room_id, details={"before": room.federate, "after": federate})
    updated = rooms_db.room_txn(conn, ctx.tenant, room_id)
    assert updated is not None
    return updated


# -- what peers send ---------------------------------------------------------------


def receive_event_txn(conn: Conn, ctx: Ctx, request_origin: str,
                      event: dict[str, Any]) -> dict[str, Any]:
    """Check and store one verified event from ``request_origin``.

    The signature was verified before; :func:`swfed.core.rooms.admit`
    decides whether the event may enter its room. Returns ``{}`` or
    ``{"seq": n}`` (we host: our order); raises FederationError to refuse.
    Replays of a stored event id are no-ops that succeed.
    """
    room_id = event["room_id"]
    stored = events_db.stored_txn(conn, ctx.tenant, room_id, event["event_id"])
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    if stored is not None:
        # a replay: a no-op if it is the same event, from a server that may send it
        rules.check_relay(event, request_origin, ctx.me)
        rules.check_replay(event, stored[1])
        return {"seq": stored[0]} if room is not None and room.host == ctx.me else {}
    invitee = event["content"].get("invitee") if event["type"] == "invite" else None
    invite_id = event["content"].get("invite_id") if event["type"] == "invite" else None
    # invites are keyed by room: another room's invite under this id is no collision
    known = invites_db.invite_txn(conn, ctx.tenant, room_id, str(invite_id)) if invite_id else None
    # Only the host judges membership and counts (core.rooms.admit): a copy
    # hosted elsewhere takes what its host relays, so it reads neither.
    judged = room is not None and room.host == ctx.me
    # an edit or delete is judged by every copy that holds its target
    changed = (_target(conn, ctx, room_id, str(event["content"].get("relates_to")))
               if event["type"] in CHANGES and room is not None else None)
    facts = rules.Facts(
        me=ctx.me, request_origin=request_origin, room=room, policy=ctx.tenant.policy,
        sender_membership=(members_db.membership_txn(conn, ctx.tenant, room_id,
                                                     event["sender"]) if judged else None),
        foreign_count=members_db.foreign_count_txn(conn, ctx.tenant, room_id) if judged else 0,
        invitee_exists=(isinstance(invitee, str) and rules.server_of(invitee) == ctx.me
                        and user_txn(conn, ctx.tenant, rules.local_part(invitee)) is not None),
        known_invite_event=None if known is None else str(known["event_id"]),
        target_held=not judged or (target := rules.relation_target(event)) is None
        or events_db.has_event_txn(conn, ctx.tenant, room_id, target),
        target=changed[2] if changed is not None else None,
        sender_is_admin=(room is not None and event["type"] in CHANGES
                         and _sender_is_admin(conn, ctx, room, event["sender"])))
    admission = rules.admit(event, facts)
    if admission.new_room is not None:
        rooms_db.insert_room_txn(conn, ctx.tenant,
                                 attrs.evolve(admission.new_room, created_at=ctx.now))
        room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    assert room is not None
    host_seq = rules.host_seq(room, ctx.me, request_origin, event)
    rules.check_relay_has_seq(room, ctx.me, host_seq)
    signed = {k: v for k, v in event.items() if k != "unsigned"}
    seq = _take(conn, ctx, room, signed, signed, host_seq, new=True)
    return {"seq": seq} if room.host == ctx.me else {}


def receive_batch_txn(conn: Conn, ctx: Ctx, origin: str,
                      verified: list[dict[str, Any]], refused: list[Refusal],
                      results: dict[str, Any],
                      after: tuple[str, str] | None = None) -> list[Refusal]:
    """One ``/send``: take each verified event, record every refusal.

    ``refused``: events already refused before (shape, signature). A leading
    run of events that only add to a room's history is stored together
    (:func:`_plain_run`); every other event runs on its own, in its own
    savepoint, so a refused one leaves nothing behind. Fills ``results`` for
    the accepted ones; returns the ones refused here.

    ``after``: (room id, event id) of the last event of the origin's ``/send``
    before this one, still unanswered when it sent this one. Until that
    event is stored or refused here, none of the verified events is taken:
    each is answered transient ``OUT_OF_ORDER`` (core.delivery), and the
    origin sends it again.
    """
    if after is not None and not follows_txn(conn, ctx.tenant, origin, after):
        deferred = deferred_for(after[1])
        for event in verified:
            results[event["event_id"]] = deferred
        verified = []
    late: list[Refusal] = []
    accepted: list[tuple[str, str]] = []
    together: list[dict[str, Any]] = []
    found = _plain_run(conn, ctx, origin, verified)
    if found is not None:
        room, together = found
        _store_run(conn, ctx, room, together)
        for event in together:
            results[event["event_id"]] = {}
            accepted.append((event["event_id"], event["room_id"]))
    for event in verified[len(together):]:
        conn.execute("SAVEPOINT ev")
        try:
            results[event["event_id"]] = receive_event_txn(conn, ctx, origin, event)
            conn.execute("RELEASE ev")
            accepted.append((event["event_id"], event["room_id"]))
        except FederationError as exc:
            conn.execute("ROLLBACK TO ev")
            conn.execute("RELEASE ev")
            late.append((event["event_id"], event["room_id"], exc))
    accepted_audit_txn(conn, ctx.tenant, ctx.now, origin, accepted)
    for key, room_id, exc in refused + late:
        reject_txn(conn, ctx.tenant, origin, ctx.now, reason=exc.code, message=exc.message,
                   event_id=None if key.startswith("#") else key, room_id=room_id)
    peers_db.count_txn(conn, ctx.tenant.tenant_id, origin, ctx.now, received=len(accepted))
    return late


def follows_txn(conn: Conn, tenant: Tenant, origin: str,
                after: tuple[str, str]) -> bool:
    """Has ``origin``'s event ``after`` (room id, event id) been answered for here:
    stored, or refused (``fed_rejected``)?"""
    room_id, event_id = after
    return (events_db.has_event_txn(conn, tenant, room_id, event_id)
            or events_db.refused_from_txn(conn, tenant, origin, event_id))


def deferred_for(event_id: str) -> dict[str, Any]:
    """The per-event answer of an event held back for ``event_id``, sent before it."""
    return {"error": {"code": OUT_OF_ORDER, "transient": True,
                      "message": f"sent after event {event_id[:100]}, which has not arrived "
                                 "here: send both again, in order"}}


def _plain_run(conn: Conn, ctx: Ctx, origin: str, events: list[dict[str, Any]]
               ) -> tuple[Room, list[dict[str, Any]]] | None:
    """The batch's leading events that the host relays next in its order and that change
    nothing but the room's history: stored together by :func:`_store_run`.

    The usual catch-up and live traffic of a room hosted elsewhere. Each one
    is exactly what :func:`receive_event_txn` would do for it -- not stored
    yet, admitted (:func:`swfed.core.rooms.admit`), the very next host seq,
    no effects, nothing to route -- so the rules are asked the same questions;
    only the writes go together. The rest of the batch takes the usual path.
    """
    if len(events) < 2:
        return None
    room_id = events[0]["room_id"]
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    # past the mark nothing is held (no late event waits to be applied): the run
    # moves the mark over itself and leaves no gap
    if (room is None or room.host != origin or room.host == ctx.me or room.synced_seq == 0
            or events_db.max_host_seq_txn(conn, ctx.tenant, room_id) != room.synced_seq):
        return None
    stored = events_db.stored_ids_txn(conn, ctx.tenant, [(room_id, e["event_id"])
                                                         for e in events
                                                         if e["room_id"] == room_id])
    facts = rules.Facts(me=ctx.me, request_origin=origin, room=room, policy=ctx.tenant.policy)
    run: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event in events:
        event_id = event["event_id"]
        if (event["room_id"] != room_id or (room_id, event_id) in stored or event_id in seen
                or rules.host_seq(room, ctx.me, origin, event) != room.synced_seq + len(run) + 1
                or rules.touched_members(event)):
            break
        try:
            if rules.admit(event, facts).new_room is not None:
                break
        except FederationError:
            break  # the usual path refuses it, and records why
        if rules.effects(event, ctx.me, {}) or rules.route_targets(room, event, ctx.me, set()):
            break
        run.append(event)
        seen.add(event_id)
    return (room, run) if run else None


def _store_run(conn: Conn, ctx: Ctx, room: Room,
               run: list[dict[str, Any]]) -> None:
    """Store a :func:`_plain_run`: its rows, search entries and the mark in a few statements."""
    first_pos = take_positions_txn(conn, ctx.tenant, len(run))
    rows = [(event, {k: v for k, v in event.items() if k != "unsigned"},
             room.synced_seq + 1 + i, first_pos + i) for i, event in enumerate(run)]
    rowids = events_db.insert_run_txn(conn, ctx.tenant, rows, ctx.now)
    index_bodies_txn(conn, [(rowids[pos], body) for event, _, _, pos in rows
                            if event["type"] == "message"
                            and isinstance(body := event["content"].get("body"), str)])
    rooms_db.set_synced_txn(conn, ctx.tenant, room.room_id, room.synced_seq + len(run))
    for event in run:
        media_db.reference_txn(conn, ctx.tenant, event, ctx.now)  # files named (issue 21)


def hosted_room_for_peer_txn(conn: Conn, tenant: Tenant, room_id: str,
                             requester: str) -> Room:
    """A room we host in which ``requester`` has a joined member, federating; else refuses."""
    return rules.check_peer_access(rooms_db.room_txn(conn, tenant, room_id), room_id,
                                   tenant.server_name, requester,
                                   members_db.member_servers_txn(conn, tenant, room_id))


def repair_page_txn(conn: Conn, tenant: Tenant, room_id: str, requester: str,
                    after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Events of a room we host after seq ``after``, oldest first, and our last seq.

    What a member server missed (gap repair). Only from the start of the
    requester's current span (:func:`swfed.core.rooms.span_start`): it gets
    what relaying would have given it, nothing said while it had no member
    here and no older history (that is backfill, under the backfill policy).
    """
    hosted_room_for_peer_txn(conn, tenant, room_id, requester)
    last = rooms_db.last_seq_txn(conn, tenant, room_id)
    span = rules.span_start(events_db.member_events_of_txn(conn, tenant, room_id, requester))
    start = rules.repair_after(after, span, last)
    return events_db.signed_after_txn(conn, tenant, room_id, start, limit), last


def backfill_page_txn(conn: Conn, tenant: Tenant, room_id: str, requester: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Signed history of a room we host, for a server with a member in it."""
    hosted_room_for_peer_txn(conn, tenant, room_id, requester)
    return events_db.signed_page_txn(conn, tenant, room_id, before, limit)


def store_backfill_txn(conn: Conn, ctx: Ctx, room_id: str,
                       events: list[dict[str, Any]], *, actor: str, peer: str,
                       refused: int) -> int:
    """An admin's backfill pull: store it (:func:`store_backfilled_txn`) and audit it."""
    stored = store_backfilled_txn(conn, ctx, room_id, events)
    audit_txn(conn, ctx.tenant, "federation.backfill", ctx.now, outcome="ok", actor=actor,
              peer=peer, room_id=room_id,
              details={"pulled": len(events), "stored": stored, "refused": refused})
    return stored


def store_backfilled_txn(conn: Conn, ctx: Ctx, room_id: str,
                         events: list[dict[str, Any]]) -> int:
    """Store verified history from the host; returns how many were new.

    History does not re-run effects (no notifications for old mentions) and
    is never routed on.
    """
    room = rooms_db.room_txn(conn, ctx.tenant, room_id)
    if room is None:
        raise room_not_found(room_id)
    stored = 0
    for seq, signed in _in_host_order(events):
        if events_db.has_event_txn(conn, ctx.tenant, room_id, signed["event_id"]):
            continue
        if _store_unless_taken(conn, ctx, room, signed, seq) is None:
            _history_change(conn, ctx, room, signed)
            stored += 1
    return stored


def _in_host_order(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(host seq, the event as signed) of history from the host, in its order.

    Pages from the host carry each event's place as ``unsigned.seq``
    (checked by :mod:`swfed.federation.history`); one without it is skipped.
    """
    out = []
    for event in events:
        seq = rules.unsigned_seq(event)
        if seq is not None:
            out.append((seq, {k: v for k, v in event.items() if k != "unsigned"}))
    return sorted(out, key=lambda pair: pair[0])


def room_and_top_txn(conn: Conn, tenant: Tenant, room_id: str) -> tuple[Room | None, int]:
    """Our copy of the room, and the highest host seq it holds (beyond the mark: a gap)."""
    return (rooms_db.room_txn(conn, tenant, room_id),
            events_db.max_host_seq_txn(conn, tenant, room_id))
