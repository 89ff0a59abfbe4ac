"""Rooms, members, events, invites, notifications, the stream and search.

Sync ``*_txn`` functions run on a database thread (see db.py). Each write
function is one transaction: an event, its stream position, its search
entry, its effects (membership, invites, notifications) and its outbox rows
are stored together or not at all.

Every event, local or received, goes through one path:
``store_event_txn`` (idempotent on event_id) → ``_apply_txn`` (effects) →
``_route_txn`` (outbox). Routing follows the host model (DESIGN §5): the
host relays each event, origin signature intact, to every other server with
members; a member server sends only its own users' events, to the host.

Visibility: a user sees a room's events and members while their membership
is ``join``. Rooms a user is not in answer exactly like rooms that do not
exist (``SW_ROOM_NOT_FOUND``), so ids cannot be probed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs

from swfed.core.errors import BadRequest, Conflict, FederationError, Forbidden, NotFound
from swfed.core.events import MessageSpec, RoomSpec, message_mentions
from swfed.core.ids import Fqid, new_room_id, new_uuid, room_host
from swfed.core.policy import decide_foreign_count, decide_peer, decide_room
from swfed.storage.audit import audit_txn
from swfed.storage.tenants import Tenant

#: Events of ours in rooms hosted elsewhere sort after everything the host
#: has ordered until the host's sequence number comes back.
PENDING_SEQ = 2**40


@attrs.define
class Ctx:
    """What a write transaction acts as: tenant, clock, signer; what it leaves.

    ``sign`` signs an event with the tenant's current key (None: no key,
    so nothing can federate). ``kicks`` collects the destinations that got
    new outbox rows, so the sender can be woken after the commit.
    """

    tenant: Tenant
    now: int
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    kicks: set[str] = attrs.Factory(set)

    @property
    def me(self) -> str:
        return self.tenant.server_name


@attrs.frozen
class Room:
    room_id: str
    name: str
    type: str
    federate: bool
    host: str
    creator: str
    created_at: int
    federated: bool


def room_not_found(room_id: str) -> NotFound:
    return NotFound(f"no room {room_id} that you are a member of", code="SW_ROOM_NOT_FOUND")


def no_key() -> FederationError:
    return FederationError("this server has no federation key: run "
                           "'swfed admin federation key generate'", code="SW_FED_NO_KEY",
                           status=503)


def server_of(fqid: str) -> str:
    return fqid[1:].partition(":")[2]


# -- rooms -------------------------------------------------------------------


def _room(conn: sqlite3.Connection, row: sqlite3.Row) -> Room:
    foreign = conn.execute(
        "SELECT 1 FROM members WHERE tenant_id = ? AND room_id = ? AND foreign_ = 1"
        " AND membership = 'join' LIMIT 1", (row["tenant_id"], row["room_id"])).fetchone()
    return Room(row["room_id"], row["name"], row["type"], bool(row["federate"]), row["host"],
                row["creator"], row["created_at"], foreign is not None)


def room_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str) -> Room | None:
    row = conn.execute("SELECT * FROM rooms WHERE tenant_id = ? AND room_id = ?",
                       (tenant.tenant_id, room_id)).fetchone()
    return None if row is None else _room(conn, row)


def membership_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                   member: str) -> str | None:
    row = conn.execute(
        "SELECT membership FROM members WHERE tenant_id = ? AND room_id = ? AND member = ?",
        (tenant.tenant_id, room_id, member)).fetchone()
    return None if row is None else str(row[0])


def joined_room_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                    member: str) -> Room:
    """The room, if ``member`` has joined it; else SW_ROOM_NOT_FOUND."""
    if membership_txn(conn, tenant, room_id, member) != "join":
        raise room_not_found(room_id)
    room = room_txn(conn, tenant, room_id)
    if room is None:
        raise room_not_found(room_id)
    return room


def _insert_room(conn: sqlite3.Connection, tenant: Tenant, room_id: str, name: str,
                 type_: str, federate: bool, host: str, creator: str, now: int) -> None:
    conn.execute(
        "INSERT INTO rooms (tenant_id, room_id, name, type, federate, host, creator, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant.tenant_id, room_id, name, type_, int(federate), host, creator, now))


def create_room_txn(conn: sqlite3.Connection, ctx: Ctx, spec: RoomSpec, creator: str,
                    display_name: str) -> Room:
    room_id = new_room_id(ctx.me)
    _insert_room(conn, ctx.tenant, room_id, spec.name, spec.type, spec.federate, ctx.me,
                 creator, ctx.now)
    room = room_txn(conn, ctx.tenant, room_id)
    assert room is not None
    emit_txn(conn, ctx, room, "member", creator,
             {"membership": "join", "display_name": display_name, "name": spec.name,
              "room_type": spec.type})
    return room


def create_dm_txn(conn: sqlite3.Connection, ctx: Ctx, creator: str, display_name: str,
                  invitee: Fqid) -> Room:
    """A federated 1:1 room and the invite of its foreign participant, atomically."""
    spec = RoomSpec(name=f"{creator} & {invitee}"[:200], type="dm", federate=True)
    room = create_room_txn(conn, ctx, spec, creator, display_name)
    invite_txn(conn, ctx, room.room_id, creator, invitee)
    found = room_txn(conn, ctx.tenant, room.room_id)
    assert found is not None
    return found


def rooms_of_txn(conn: sqlite3.Connection, tenant: Tenant, member: str) -> list[Room]:
    rows = conn.execute(
        "SELECT r.* FROM rooms r JOIN members m ON m.tenant_id = r.tenant_id"
        " AND m.room_id = r.room_id WHERE r.tenant_id = ? AND m.member = ?"
        " AND m.membership = 'join' ORDER BY r.created_at, r.room_id",
        (tenant.tenant_id, member)).fetchall()
    return [_room(conn, r) for r in rows]


def _set_membership(conn: sqlite3.Connection, ctx: Ctx, room_id: str, member: str,
                    membership: str, display_name: str | None = None) -> None:
    foreign = server_of(member) != ctx.me
    conn.execute(
        "INSERT INTO members (tenant_id, room_id, member, membership, foreign_, display_name,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, room_id, member)"
        " DO UPDATE SET membership = excluded.membership, updated_at = excluded.updated_at,"
        " display_name = COALESCE(excluded.display_name, members.display_name)",
        (ctx.tenant.tenant_id, room_id, member, membership, int(foreign), display_name,
         ctx.now))


def members_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                viewer: str) -> list[dict[str, Any]]:
    joined_room_txn(conn, tenant, room_id, viewer)
    rows = conn.execute(
        "SELECT m.member, m.membership, m.foreign_, m.display_name AS member_name,"
        " u.display_name AS user_name FROM members m"
        " LEFT JOIN users u ON u.tenant_id = m.tenant_id AND m.foreign_ = 0"
        " AND '@' || u.local_id || ':' || ? = m.member"
        " WHERE m.tenant_id = ? AND m.room_id = ? AND m.membership IN ('join', 'invite')"
        " ORDER BY m.updated_at, m.member",
        (tenant.server_name, tenant.tenant_id, room_id)).fetchall()
    out = []
    for r in rows:
        local_id, _, server = r["member"][1:].partition(":")
        out.append({
            "id": Fqid(local_id, server).display(tenant.server_name),
            "fqid": r["member"],
            "foreign": bool(r["foreign_"]),
            "display_name": r["user_name"] or r["member_name"] or local_id,
            "membership": r["membership"],
        })
    return out


def members_txn_for_peer(conn: sqlite3.Connection, tenant: Tenant,
                         room_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT member, membership, display_name FROM members WHERE"
                        " tenant_id = ? AND room_id = ? AND membership IN ('join', 'invite')"
                        " ORDER BY updated_at, member", (tenant.tenant_id, room_id)).fetchall()
    return [{"fqid": r[0], "membership": r[1], "display_name": r[2]} for r in rows]


def member_servers_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                       memberships: tuple[str, ...] = ("join",)) -> set[str]:
    marks = ",".join("?" * len(memberships))
    rows = conn.execute(
        f"SELECT member FROM members WHERE tenant_id = ? AND room_id = ?"
        f" AND membership IN ({marks})", (tenant.tenant_id, room_id, *memberships)).fetchall()
    return {server_of(r[0]) for r in rows}


def foreign_count_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM members WHERE tenant_id = ? AND room_id = ?"
                       " AND foreign_ = 1 AND membership IN ('join', 'invite')",
                       (tenant.tenant_id, room_id)).fetchone()
    return int(row[0])


# -- the event path ------------------------------------------------------------


def next_pos_txn(conn: sqlite3.Connection, tenant: Tenant) -> int:
    """Take the tenant's next stream position (SSE id)."""
    row = conn.execute("UPDATE tenants SET stream_pos = stream_pos + 1 WHERE tenant_id = ?"
                       " RETURNING stream_pos", (tenant.tenant_id,)).fetchone()
    return int(row[0])


def next_seq_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str) -> int:
    """The host's next order number in a room it hosts."""
    row = conn.execute("UPDATE rooms SET last_seq = last_seq + 1 WHERE tenant_id = ?"
                       " AND room_id = ? RETURNING last_seq",
                       (tenant.tenant_id, room_id)).fetchone()
    return int(row[0])


def has_event_txn(conn: sqlite3.Connection, tenant: Tenant, event_id: str) -> bool:
    return conn.execute("SELECT 1 FROM events WHERE tenant_id = ? AND event_id = ?",
                        (tenant.tenant_id, event_id)).fetchone() is not None


def store_event_txn(conn: sqlite3.Connection, ctx: Ctx, room: Room, event: dict[str, Any],
                    signed: dict[str, Any] | None, host_seq: int | None = None) -> int | None:
    """Store one event; return its seq, or None if it was already stored.

    The seq is the host's order: taken here if we host the room, else the one
    the host gave (``host_seq``), else pending until the host answers.
    """
    if has_event_txn(conn, ctx.tenant, event["event_id"]):
        return None
    pos = next_pos_txn(conn, ctx.tenant)
    if room.host == ctx.me:
        seq = next_seq_txn(conn, ctx.tenant, room.room_id)
    else:
        seq = host_seq if host_seq is not None else PENDING_SEQ + pos
    cur = conn.execute(
        "INSERT INTO events (tenant_id, pos, room_id, event_id, seq, type, sender, origin,"
        " origin_ts, content, signed, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ctx.tenant.tenant_id, pos, event["room_id"], event["event_id"], seq, event["type"],
         event["sender"], event["origin"], event["origin_ts"],
         json.dumps(event["content"], ensure_ascii=False),
         None if signed is None else json.dumps(signed, ensure_ascii=False), ctx.now))
    body = event["content"].get("body") if event["type"] == "message" else None
    if isinstance(body, str):
        conn.execute("INSERT INTO events_fts (rowid, body) VALUES (?, ?)", (cur.lastrowid, body))
    return seq


def set_host_seq_txn(conn: sqlite3.Connection, tenant: Tenant, event_id: str, seq: int) -> None:
    """The host ordered one of our events: adopt its sequence number."""
    conn.execute("UPDATE events SET seq = ? WHERE tenant_id = ? AND event_id = ? AND seq >= ?",
                 (seq, tenant.tenant_id, event_id, PENDING_SEQ))


def _apply_txn(conn: sqlite3.Connection, ctx: Ctx, room: Room, event: dict[str, Any]) -> None:
    """The effects of a newly stored event on membership, invites, notifications."""
    content = event["content"]
    sender = event["sender"]
    suffix = ":" + ctx.me
    if event["type"] == "invite":
        invitee = str(content["invitee"])
        if membership_txn(conn, ctx.tenant, room.room_id, invitee) != "join":
            _set_membership(conn, ctx, room.room_id, invitee, "invite")
        invite_id = str(content["invite_id"])
        if conn.execute("SELECT 1 FROM invites WHERE invite_id = ? AND tenant_id = ?",
                        (invite_id, ctx.tenant.tenant_id)).fetchone() is None:
            conn.execute(
                "INSERT INTO invites (invite_id, tenant_id, room_id, room_name, room_type, host,"
                " invitee, inviter, state, event_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (invite_id, ctx.tenant.tenant_id, room.room_id, room.name, room.type,
                 room.host, invitee, sender, event["event_id"], ctx.now))
            if invitee.endswith(suffix):
                add_notification_txn(conn, ctx.tenant, invitee[1:-len(suffix)], "invite",
                                     sender, ctx.now, room_id=room.room_id, invite_id=invite_id)
    elif event["type"] == "member":
        membership = content.get("membership")
        name = content.get("display_name") if isinstance(content.get("display_name"),
                                                         str) else None
        state = "join" if membership == "join" else "leave"
        _set_membership(conn, ctx, room.room_id, sender, state, name)
        conn.execute("UPDATE invites SET state = ? WHERE tenant_id = ? AND room_id = ?"
                     " AND invitee = ? AND state = 'pending'",
                     ("accepted" if state == "join" else "declined", ctx.tenant.tenant_id,
                      room.room_id, sender))
    elif event["type"] == "message":
        notify_mentions_txn(conn, ctx.tenant, event, ctx.now)


def _route_txn(conn: sqlite3.Connection, ctx: Ctx, room: Room, event: dict[str, Any],
               signed: dict[str, Any] | None, seq: int, *,
               joined_before: set[str] | None = None) -> None:
    """Queue the event for the servers that must get it (DESIGN §5)."""
    if room.host == ctx.me:
        targets = member_servers_txn(conn, ctx.tenant, room.room_id)
        if event["type"] == "invite":
            targets.add(server_of(str(event["content"]["invitee"])))
        targets -= {ctx.me, event["origin"]}
    else:
        targets = {room.host} if event["origin"] == ctx.me else set()
    if targets and not room.federate:
        if room.host != ctx.me:
            # The room lives on its host: a write that cannot reach it is refused.
            check_room_federates(room, ctx.me)
        targets = set()  # we host it and keep it local while the flag is off
    if targets and signed is None:
        raise no_key()
    if targets:
        assert signed is not None
        payload = {**signed, "unsigned": {"seq": seq}} if room.host == ctx.me else signed
        for destination in sorted(targets):
            enqueue_txn(conn, ctx, destination, payload)
    # A server whose first member just joined gets the room's membership so far.
    if (room.host == ctx.me and event["type"] == "member" and joined_before is not None
            and event["origin"] not in joined_before and event["origin"] != ctx.me
            and event["content"].get("membership") == "join"):
        for snap in membership_snapshot_txn(conn, ctx.tenant, room.room_id,
                                            exclude=event["event_id"]):
            enqueue_txn(conn, ctx, event["origin"], snap)


def enqueue_txn(conn: sqlite3.Connection, ctx: Ctx, destination: str,
                payload: dict[str, Any]) -> None:
    conn.execute("INSERT INTO outbox (tenant_id, destination, event_id, payload, created_at)"
                 " VALUES (?, ?, ?, ?, ?)",
                 (ctx.tenant.tenant_id, destination, payload["event_id"],
                  json.dumps(payload, ensure_ascii=False), ctx.now))
    ctx.kicks.add(destination)


def membership_snapshot_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                            exclude: str) -> list[dict[str, Any]]:
    """The latest signed member event of each joined member, in host order."""
    rows = conn.execute(
        "SELECT e.signed, e.seq FROM events e JOIN members m ON m.tenant_id = e.tenant_id"
        " AND m.room_id = e.room_id AND m.member = e.sender AND m.membership = 'join'"
        " WHERE e.tenant_id = ? AND e.room_id = ? AND e.type = 'member'"
        " AND e.event_id != ? AND e.signed IS NOT NULL AND e.seq = (SELECT MAX(e2.seq)"
        " FROM events e2 WHERE e2.tenant_id = e.tenant_id AND e2.room_id = e.room_id"
        " AND e2.sender = e.sender AND e2.type = 'member') ORDER BY e.seq",
        (tenant.tenant_id, room_id, exclude)).fetchall()
    return [{**json.loads(r["signed"]), "unsigned": {"seq": r["seq"]}} for r in rows]


def emit_txn(conn: sqlite3.Connection, ctx: Ctx, room: Room, type_: str, sender: str,
             content: dict[str, Any]) -> dict[str, Any]:
    """Create an event of ours: sign, store, apply, route. Returns the event."""
    event = {"event_id": new_uuid(), "room_id": room.room_id, "type": type_,
             "sender": sender, "origin": ctx.me, "origin_ts": ctx.now, "content": content}
    signed = ctx.sign(event) if ctx.sign is not None else None
    joined_before = member_servers_txn(conn, ctx.tenant, room.room_id)
    seq = store_event_txn(conn, ctx, room, event, signed)
    assert seq is not None
    _apply_txn(conn, ctx, room, event)
    _route_txn(conn, ctx, room, event, signed, seq, joined_before=joined_before)
    return event


def _event_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"event_id": row["event_id"], "room_id": row["room_id"], "type": row["type"],
            "sender": row["sender"], "origin_ts": row["origin_ts"],
            "content": json.loads(row["content"]), "seq": row["seq"]}


def event_in_room_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                      event_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND event_id = ?", (tenant.tenant_id, room_id, event_id)).fetchone()
    return None if row is None else _event_json(row)


# -- what local users do ---------------------------------------------------------


def send_message_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, sender: str,
                     spec: MessageSpec) -> dict[str, Any]:
    """Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND (reply target)."""
    room = joined_room_txn(conn, ctx.tenant, room_id, sender)
    if spec.in_reply_to is not None and event_in_room_txn(
            conn, ctx.tenant, room_id, spec.in_reply_to) is None:
        raise NotFound(f"in_reply_to: no event {spec.in_reply_to} in this room",
                       code="SW_EVENT_NOT_FOUND")
    return emit_txn(conn, ctx, room, "message", sender, spec.content(ctx.me))


def notify_mentions_txn(conn: sqlite3.Connection, tenant: Tenant, event: dict[str, Any],
                        now: int) -> None:
    """A mention notifies each mentioned local member of the room (not the sender)."""
    suffix = ":" + tenant.server_name
    for fqid in message_mentions(event["content"]):
        if not fqid.endswith(suffix) or fqid == event["sender"]:
            continue
        if membership_txn(conn, tenant, event["room_id"], fqid) != "join":
            continue
        add_notification_txn(conn, tenant, fqid[1:-len(suffix)], "mention", event["sender"],
                             now, room_id=event["room_id"], event_id=event["event_id"])


def react_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, sender: str, target: str,
              key: str) -> dict[str, Any]:
    """React to a message; reacting twice with the same key returns the first."""
    room = joined_room_txn(conn, ctx.tenant, room_id, sender)
    target_event = event_in_room_txn(conn, ctx.tenant, room_id, target)
    if target_event is None or target_event["type"] != "message":
        raise NotFound(f"no message {target} in this room", code="SW_EVENT_NOT_FOUND")
    content = {"relates_to": target, "key": key}
    for row in conn.execute(
            "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND type = 'reaction'"
            " AND sender = ?", (ctx.tenant.tenant_id, room_id, sender)):
        if json.loads(row["content"]) == content:
            return _event_json(row)
    return emit_txn(conn, ctx, room, "reaction", sender, content)


def messages_page_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str, viewer: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Events newest first (host order), ``limit`` of them before seq ``before``."""
    joined_room_txn(conn, tenant, room_id, viewer)
    rows = conn.execute(
        "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND seq < ?"
        " ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    events = [_event_json(r) for r in rows[:limit]]
    nxt = events[-1]["seq"] if len(rows) > limit else None
    return events, nxt


# -- invites and notifications -------------------------------------------------


def add_notification_txn(conn: sqlite3.Connection, tenant: Tenant, local_id: str, type_: str,
                         sender: str, now: int, *, room_id: str | None = None,
                         event_id: str | None = None, invite_id: str | None = None) -> str:
    notification_id = new_uuid()
    conn.execute(
        "INSERT INTO notifications (notification_id, tenant_id, local_id, pos, type, room_id,"
        " event_id, invite_id, sender, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (notification_id, tenant.tenant_id, local_id, next_pos_txn(conn, tenant), type_,
         room_id, event_id, invite_id, sender, now))
    return notification_id


def _notification_json(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {"notification_id": row["notification_id"], "type": row["type"],
                           "room_id": row["room_id"], "from": row["sender"],
                           "created_at": row["created_at"]}
    if row["event_id"] is not None:
        out["event_id"] = row["event_id"]
    if row["invite_id"] is not None:
        out["invite_id"] = row["invite_id"]
    return out


def notifications_txn(conn: sqlite3.Connection, tenant: Tenant, local_id: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    rows = conn.execute(
        "SELECT * FROM notifications WHERE tenant_id = ? AND local_id = ? AND pos < ?"
        " ORDER BY pos DESC LIMIT ?",
        (tenant.tenant_id, local_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    out = [_notification_json(r) for r in rows[:limit]]
    nxt = rows[limit - 1]["pos"] if len(rows) > limit else None
    return out, nxt


def invite_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, inviter: str,
               invitee: Fqid) -> dict[str, Any]:
    """Invite someone, local or foreign, into a room we host; idempotent while pending.

    Raises SW_ROOM_NOT_FOUND, SW_USER_NOT_FOUND, SW_ALREADY_MEMBER, SW_NOT_HOST
    and, for a foreign invitee, the policy's SW_FED_… refusals.
    """
    room = joined_room_txn(conn, ctx.tenant, room_id, inviter)
    if room.host != ctx.me:
        raise Forbidden(f"only members on the hosting server ({room.host}) can invite "
                        "into this room", code="SW_NOT_HOST")
    target = str(invitee)
    if invitee.server_name == ctx.me:
        if conn.execute("SELECT 1 FROM users WHERE tenant_id = ? AND local_id = ?",
                        (ctx.tenant.tenant_id, invitee.local_id)).fetchone() is None:
            raise NotFound(f"no user {invitee.display(ctx.me)} on this server",
                           code="SW_USER_NOT_FOUND")
    if membership_txn(conn, ctx.tenant, room_id, target) == "join":
        raise Conflict(f"{target} is already a member of this room", code="SW_ALREADY_MEMBER")
    pending = conn.execute(
        "SELECT invite_id FROM invites WHERE tenant_id = ? AND room_id = ? AND invitee = ?"
        " AND state = 'pending'", (ctx.tenant.tenant_id, room_id, target)).fetchone()
    if pending is not None:
        return {"invite_id": pending[0], "room_id": room_id}
    content: dict[str, Any] = {"invitee": target, "invite_id": new_uuid(),
                               "room_name": room.name, "room_type": room.type}
    if invitee.server_name != ctx.me:
        decide_room(room.type, room.federate)
        decide_peer(ctx.tenant.policy, invitee.server_name)
        decide_foreign_count(ctx.tenant.policy,
                             foreign_count_txn(conn, ctx.tenant, room_id) + 1)
        if ctx.sign is None:
            raise no_key()
        content["members"] = sorted(
            r[0] for r in conn.execute(
                "SELECT member FROM members WHERE tenant_id = ? AND room_id = ?"
                " AND membership = 'join'", (ctx.tenant.tenant_id, room_id)))
    emit_txn(conn, ctx, room, "invite", inviter, content)
    return {"invite_id": content["invite_id"], "room_id": room_id}


def pending_invite_txn(conn: sqlite3.Connection, tenant: Tenant, invite_id: str,
                       invitee: str) -> sqlite3.Row:
    """A pending invite addressed to ``invitee``; raises SW_INVITE_NOT_FOUND."""
    row = conn.execute("SELECT * FROM invites WHERE tenant_id = ? AND invite_id = ?"
                       " AND invitee = ?", (tenant.tenant_id, invite_id, invitee)).fetchone()
    if row is None:
        raise NotFound(f"no invite {invite_id} for you", code="SW_INVITE_NOT_FOUND")
    if row["state"] != "pending":
        raise Conflict(f"invite {invite_id} was already {row['state']}",
                       code="SW_INVITE_NOT_PENDING")
    return row


def answer_invite_txn(conn: sqlite3.Connection, ctx: Ctx, invite_id: str, invitee: str,
                      accept: bool, display_name: str) -> str:
    """Accept or decline a pending invite; returns the room id.

    In a room hosted elsewhere the answer is a signed member event that goes
    to the host; it holds here at once.
    """
    row = pending_invite_txn(conn, ctx.tenant, invite_id, invitee)
    room = room_txn(conn, ctx.tenant, row["room_id"])
    if room is None:
        raise room_not_found(row["room_id"])
    content: dict[str, Any] = {"membership": "join" if accept else "decline",
                               "invite_id": invite_id}
    if accept:
        content["display_name"] = display_name
    emit_txn(conn, ctx, room, "member", invitee, content)
    return room.room_id


def join_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, member: str,
             display_name: str) -> str:
    """Join a room: accepts the member's pending invite to it.

    Raises SW_ROOM_NOT_FOUND when there is none (rooms are invite-only).
    """
    if membership_txn(conn, ctx.tenant, room_id, member) == "join":
        return room_id
    row = conn.execute("SELECT invite_id FROM invites WHERE tenant_id = ? AND room_id = ?"
                       " AND invitee = ? AND state = 'pending'",
                       (ctx.tenant.tenant_id, room_id, member)).fetchone()
    if row is None:
        raise room_not_found(room_id)
    return answer_invite_txn(conn, ctx, row[0], member, True, display_name)


def leave_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, member: str) -> None:
    room = joined_room_txn(conn, ctx.tenant, room_id, member)
    emit_txn(conn, ctx, room, "member", member, {"membership": "leave"})


# -- what peers send ---------------------------------------------------------------


def receive_event_txn(conn: sqlite3.Connection, ctx: Ctx, request_origin: str,
                      event: dict[str, Any]) -> dict[str, Any]:
    """Check and store one verified event from ``request_origin``.

    The signature was verified before; this decides whether the event may
    enter the room (host model) and applies it. Returns ``{}`` or
    ``{"seq": n}`` (we host: our order); raises FederationError to refuse.
    Replays of a stored event id are no-ops that succeed.
    """
    room_id = event["room_id"]
    host = room_host(room_id)
    origin = event["origin"]
    if origin != request_origin and request_origin != host:
        raise FederationError(f"{request_origin} relayed an event of {origin} in a room it "
                              "does not host", code="SW_FED_NOT_HOST", status=403)
    if has_event_txn(conn, ctx.tenant, event["event_id"]):
        row = conn.execute("SELECT seq FROM events WHERE tenant_id = ? AND event_id = ?",
                           (ctx.tenant.tenant_id, event["event_id"])).fetchone()
        return {"seq": row[0]} if host == ctx.me else {}
    room = room_txn(conn, ctx.tenant, room_id)
    content = event["content"]
    if room is not None:
        check_room_federates(room, ctx.me)
    if event["type"] == "invite":
        room = _receive_invite(conn, ctx, request_origin, host, room, event)
    elif room is None:
        raise FederationError(f"no room {room_id} here", code="SW_FED_UNKNOWN_ROOM",
                              status=404)
    elif room.host == ctx.me:
        current = membership_txn(conn, ctx.tenant, room_id, event["sender"])
        if event["type"] == "member" and content.get("membership") == "join":
            if current not in ("invite", "join"):
                raise FederationError(f"{event['sender']} has no invite to {room_id}",
                                      code="SW_FED_NOT_INVITED", status=403)
            decide_foreign_count(ctx.tenant.policy,
                                 foreign_count_txn(conn, ctx.tenant, room_id)
                                 + (0 if current else 1))
        elif event["type"] == "member":
            if current not in ("invite", "join"):
                raise FederationError(f"{event['sender']} is not in {room_id}",
                                      code="SW_FED_NOT_MEMBER", status=403)
        elif current != "join":
            raise FederationError(f"{event['sender']} is not a member of {room_id}",
                                  code="SW_FED_NOT_MEMBER", status=403)
    host_seq = None
    unsigned = event.get("unsigned")
    if room.host != ctx.me and request_origin == room.host and isinstance(unsigned, dict):
        raw = unsigned.get("seq")
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < PENDING_SEQ:
            host_seq = raw
    signed = {k: v for k, v in event.items() if k != "unsigned"}
    joined_before = member_servers_txn(conn, ctx.tenant, room_id)
    seq = store_event_txn(conn, ctx, room, signed, signed, host_seq)
    assert seq is not None
    _apply_txn(conn, ctx, room, signed)
    _route_txn(conn, ctx, room, signed, signed, seq, joined_before=joined_before)
    return {"seq": seq} if room.host == ctx.me else {}


def _receive_invite(conn: sqlite3.Connection, ctx: Ctx, request_origin: str, host: str | None,
                    room: Room | None, event: dict[str, Any]) -> Room:
    content = event["content"]
    if request_origin != host or event["origin"] != host:
        raise FederationError("only the room's host may send invites",
                              code="SW_FED_NOT_HOST", status=403)
    invitee = content.get("invitee")
    for field in ("invitee", "invite_id", "room_name", "room_type"):
        if not isinstance(content.get(field), str):
            raise FederationError(f"invite content lacks {field}", code="SW_FED_BAD_EVENT",
                                  status=400)
    assert isinstance(invitee, str)
    if room is not None:
        return room  # an invite for someone else, relayed to us as a member server
    if server_of(invitee) != ctx.me:
        raise FederationError(f"invite for {invitee} sent to {ctx.me}",
                              code="SW_FED_BAD_EVENT", status=400)
    if conn.execute("SELECT 1 FROM users WHERE tenant_id = ? AND local_id = ?",
                    (ctx.tenant.tenant_id, invitee[1:].partition(":")[0])).fetchone() is None:
        raise FederationError(f"no user {invitee} here", code="SW_FED_USER_NOT_FOUND",
                              status=404)
    decide_room(content["room_type"], True)
    members = content.get("members") if isinstance(content.get("members"), list) else []
    foreign = {m for m in members if isinstance(m, str) and server_of(m) != ctx.me}
    decide_foreign_count(ctx.tenant.policy, len(foreign))
    _insert_room(conn, ctx.tenant, event["room_id"], content["room_name"][:200],
                 content["room_type"], True, str(host), event["sender"], ctx.now)
    new_room = room_txn(conn, ctx.tenant, event["room_id"])
    assert new_room is not None
    return new_room


def check_room_federates(room: Room, me: str) -> None:
    """Raises SW_FED_ROOM_NOT_FEDERATED when this server's copy has the flag off."""
    if not room.federate:
        raise FederationError(
            f"room {room.room_id} has federation switched off on {me} (its federate flag): "
            "the room's creator or a tenant admin there turns it on with "
            'PATCH /v1/rooms/{room_id} {"federate": true}', code="SW_FED_ROOM_NOT_FEDERATED",
            status=403)


def hosted_room_for_peer_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                             requester: str) -> Room:
    """A room we host in which ``requester`` has a member, federating; else refuses."""
    room = room_txn(conn, tenant, room_id)
    if room is None or room.host != tenant.server_name or requester not in member_servers_txn(
            conn, tenant, room_id, ("join", "invite")):
        raise FederationError(f"{requester} has no member in a room {room_id} hosted here",
                              code="SW_FED_NOT_MEMBER", status=403)
    check_room_federates(room, tenant.server_name)
    return room


def set_federate_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str, actor: str,
                     actor_is_admin: bool, federate: bool) -> Room:
    """Set this server's federate flag of a room (its creator or a tenant admin); audited."""
    room = joined_room_txn(conn, ctx.tenant, room_id, actor)
    if not actor_is_admin and room.creator != actor:
        raise Forbidden("only the room's creator or a tenant admin can change its federate "
                        "flag", code="SW_NOT_ROOM_ADMIN")
    if federate:
        decide_room(room.type, True)
    conn.execute("UPDATE rooms SET federate = ? WHERE tenant_id = ? AND room_id = ?",
                 (int(federate), ctx.tenant.tenant_id, room_id))
    audit_txn(conn, ctx.tenant, "federation.room.federate", ctx.now, outcome="ok", actor=actor,
              room_id=room_id, details={"before": room.federate, "after": federate})
    updated = room_txn(conn, ctx.tenant, room_id)
    assert updated is not None
    return updated


def backfill_page_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str, requester: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Signed history of a room we host, for a server with a member in it."""
    hosted_room_for_peer_txn(conn, tenant, room_id, requester)
    rows = conn.execute(
        "SELECT signed, seq FROM events WHERE tenant_id = ? AND room_id = ? AND seq < ?"
        " AND signed IS NOT NULL ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    events = [{**json.loads(r["signed"]), "unsigned": {"seq": r["seq"]}} for r in rows[:limit]]
    nxt = rows[limit - 1]["seq"] if len(rows) > limit else None
    return events, nxt


def store_backfilled_txn(conn: sqlite3.Connection, ctx: Ctx, room_id: str,
                         events: list[dict[str, Any]]) -> int:
    """Store verified history from the host; returns how many were new.

    History does not re-run effects (no notifications for old mentions) and
    is never routed on; membership is still updated from member events.
    """
    room = room_txn(conn, ctx.tenant, room_id)
    if room is None:
        raise room_not_found(room_id)
    stored = 0
    for event in sorted(events, key=lambda e: e.get("unsigned", {}).get("seq", 0)):
        seq = event.get("unsigned", {}).get("seq")
        signed = {k: v for k, v in event.items() if k != "unsigned"}
        if store_event_txn(conn, ctx, room, signed, signed,
                           seq if isinstance(seq, int) else None) is not None:
            stored += 1
    return stored


# -- stream ------------------------------------------------------------------


def stream_txn(conn: sqlite3.Connection, tenant: Tenant, local_id: str, after: int,
               limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Everything for one user after stream position ``after``, in order.

    Returns (pos, kind, payload) with kind ``event`` or ``notification``.
    Each kind is read up to ``limit`` and the merge cut to ``limit``: if an
    item at or below the last returned position were missing, its kind's
    list would be full with items all below it, and then the merge would
    hold more than ``limit`` items. So nothing is skipped.
    """
    fqid = f"@{local_id}:{tenant.server_name}"
    events = conn.execute(
        "SELECT e.* FROM events e JOIN members m ON m.tenant_id = e.tenant_id"
        " AND m.room_id = e.room_id AND m.member = ? AND m.membership = 'join'"
        " WHERE e.tenant_id = ? AND e.pos > ? ORDER BY e.pos LIMIT ?",
        (fqid, tenant.tenant_id, after, limit)).fetchall()
    notes = conn.execute(
        "SELECT * FROM notifications WHERE tenant_id = ? AND local_id = ? AND pos > ?"
        " ORDER BY pos LIMIT ?", (tenant.tenant_id, local_id, after, limit)).fetchall()
    merged = [(r["pos"], "event", _event_json(r)) for r in events]
    merged += [(r["pos"], "notification", _notification_json(r)) for r in notes]
    merged.sort(key=lambda item: item[0])
    return merged[:limit]


def stream_head_txn(conn: sqlite3.Connection, tenant: Tenant) -> int:
    row = conn.execute("SELECT stream_pos FROM tenants WHERE tenant_id = ?",
                       (tenant.tenant_id,)).fetchone()
    return int(row[0])


# -- search ------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+\*?", re.UNICODE)


def fts_query(q: str) -> str:
    """Turn what a user typed into a safe FTS5 query: all words must match.

    Every word becomes a quoted phrase, so FTS5 operators in user input are
    just text; a trailing ``*`` keeps prefix search. Raises SW_BAD_QUERY.
    """
    words = _TOKEN_RE.findall(q)
    if not words:
        raise BadRequest("q: give at least one word to search for", code="SW_BAD_QUERY")
    parts = []
    for w in words[:20]:
        star = w.endswith("*")
        parts.append('"' + w.rstrip("*") + '"' + ("*" if star else ""))
    return " ".join(parts)


def search_txn(conn: sqlite3.Connection, tenant: Tenant, viewer: str, q: str,
               limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT e.* FROM events_fts f JOIN events e ON e.rowid_ = f.rowid"
        " JOIN members m ON m.tenant_id = e.tenant_id AND m.room_id = e.room_id"
        " AND m.member = ? AND m.membership = 'join'"
        " WHERE events_fts MATCH ? AND e.tenant_id = ? ORDER BY f.rank LIMIT ?",
        (viewer, fts_query(q), tenant.tenant_id, limit)).fetchall()
    return [_event_json(r) for r in rows]
