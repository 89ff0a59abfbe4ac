"""Read state on the server (issue 20): a read marker per user per room, and the
unread and mention counts of a user's rooms, so every device of theirs agrees;
and who hears a typing signal (nothing of it is stored).

A marker is the host seq the user has read up to; it only moves forward.
Unread: the room's host-ordered messages after it, not the user's own, not
deleted. Mentions: the user's mention notifications in the room of messages
after it. A notification's ``seen`` is its own (the bell), set apart.
"""

from __future__ import annotations

from typing import Any

from swfed.core.errors import BadRequest, NotFound
from swfed.core.rooms import PENDING_SEQ, Room, local_part
from swfed.storage import events as events_db
from swfed.storage import members as members_db
from swfed.storage import rooms as rooms_db
from swfed.storage.conn import Conn
from swfed.storage.context import Ctx
from swfed.storage.notifications import mark_seen_txn
from swfed.storage.stream import next_pos_txn, take_positions_txn
from swfed.storage.tenants import Tenant

#: A tombstone's shown content begins so (storage.events keeps it so).
_NOT_DELETED = "e.content NOT LIKE '{\"deleted\": %'"


def marker_txn(conn: Conn, tenant: Tenant, room_id: str, member: str) -> int:
    row = conn.execute("SELECT seq FROM read_markers WHERE tenant_id = ? AND room_id = ?"
                       " AND member = ?", (tenant.tenant_id, room_id, member)).fetchone()
    return 0 if row is None else int(row[0])


def mark_read_txn(conn: Conn, ctx: Ctx, room_id: str, member: str, seq: int | None,
                  event_id: str | None) -> dict[str, Any]:
    """Move ``member``'s read marker in the room up to ``seq`` (or that event's seq).

    Raises SW_ROOM_NOT_FOUND, SW_EVENT_NOT_FOUND, SW_BAD_VALUE (an event the host
    has not ordered yet). Returns the room's read state.
    """
    rooms_db.joined_room_txn(conn, ctx.tenant, room_id, member)
    if event_id is not None:
        event = events_db.event_in_room_txn(conn, ctx.tenant, room_id, event_id)
        if event is None:
            raise NotFound(f"no event {event_id} in this room", code="SW_EVENT_NOT_FOUND")
        if event["seq"] >= PENDING_SEQ:
            raise BadRequest(f"event {event_id} has no place in the host's order yet: mark "
                             "read up to the event before it", code="SW_BAD_VALUE")
        seq = int(event["seq"])
    assert seq is not None
    seq = min(seq, events_db.max_host_seq_txn(conn, ctx.tenant, room_id))
    if seq > marker_txn(conn, ctx.tenant, room_id, member):
        conn.execute(
            "INSERT INTO read_markers (tenant_id, room_id, member, seq, pos, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, room_id, member)"
            " DO UPDATE SET seq = excluded.seq, pos = excluded.pos,"
            " updated_at = excluded.updated_at",
            (ctx.tenant.tenant_id, room_id, member, seq, next_pos_txn(conn, ctx.tenant),
             ctx.now))
    return {"room_id": room_id, **room_counts_txn(conn, ctx.tenant, member,
                                                  [room_id]).get(room_id, _empty())}


def _empty() -> dict[str, Any]:
    return {"read_seq": 0, "unread": 0, "mentions": 0, "last_activity": None}


def room_counts_txn(conn: Conn, tenant: Tenant, member: str,
                    room_ids: list[str]) -> dict[str, dict[str, Any]]:
    """room_id -> {read_seq, unread, mentions, last_activity} of ``member``'s rooms.

    A few grouped statements for all of them: never one per room.
    ``last_activity``: the ``origin_ts`` of the room's newest message (None if none).
    """
    out = {r: _empty() for r in room_ids}
    if not room_ids:
        return out
    for row in conn.execute("SELECT room_id, seq FROM read_markers WHERE tenant_id = ?"
                            " AND member = ?", (tenant.tenant_id, member)):
        if row[0] in out:
            out[row[0]]["read_seq"] = int(row[1])
    for row in conn.execute(
            "SELECT e.room_id, SUM(CASE WHEN e.sender != ? AND e.seq > COALESCE(r.seq, 0)"
            f" AND e.seq < ? AND e.status = 'sent' AND {_NOT_DELETED} THEN 1 ELSE 0 END),"
            " MAX(e.origin_ts) FROM events e JOIN members m ON m.tenant_id = e.tenant_id"
            " AND m.room_id = e.room_id AND m.member = ? AND m.membership = 'join'"
            " LEFT JOIN read_markers r ON r.tenant_id = e.tenant_id AND r.room_id = e.room_id"
            " AND r.member = m.member"
            " WHERE e.tenant_id = ? AND e.type = 'message' AND (e.status != 'refused'"
            " OR e.sender = ?) GROUP BY e.room_id",
            (member, PENDING_SEQ, member, tenant.tenant_id, member)):
        if row[0] in out:
            out[row[0]]["unread"] = int(row[1] or 0)
            out[row[0]]["last_activity"] = None if row[2] is None else int(row[2])
    for row in conn.execute(
            "SELECT n.room_id, COUNT(*) FROM notifications n JOIN events e"
            " ON e.tenant_id = n.tenant_id AND e.room_id = n.room_id AND e.event_id = n.event_id"
            " LEFT JOIN read_markers r ON r.tenant_id = n.tenant_id AND r.room_id = n.room_id"
            " AND r.member = ? WHERE n.tenant_id = ? AND n.local_id = ? AND n.type = 'mention'"
            " AND e.seq > COALESCE(r.seq, 0) GROUP BY n.room_id",
            (member, tenant.tenant_id, local_part(member))):
        if row[0] in out:
            out[row[0]]["mentions"] = int(row[1])
    return out



def my_rooms_txn(conn: Conn, tenant: Tenant,
                 member: str) -> list[tuple[Room, dict[str, Any]]]:
    """``member``'s joined rooms, each with its read state (:func:`room_counts_txn`)."""
    rooms = rooms_db.rooms_of_txn(conn, tenant, member)
    counts = room_counts_txn(conn, tenant, member, [r.room_id for r in rooms])
    return [(r, counts[r.room_id]) for r in rooms]


def seen_txn(conn: Conn, ctx: Ctx, local_id: str, notification_ids: list[str] | None) -> int:
    """Mark the user's notifications seen (these, or all unseen); returns how many."""
    return mark_seen_txn(conn, ctx.tenant, local_id, notification_ids,
                         lambda n: take_positions_txn(conn, ctx.tenant, n))


def typing_audience_txn(conn: Conn, tenant: Tenant, room_id: str,
                        user: str) -> tuple[Room | None, list[str]]:
    """For a typing signal (swfed.typing_signals): the room (None unless ``user`` is
    joined in our copy) and the fqids of its joined members."""
    room = rooms_db.room_txn(conn, tenant, room_id)
    joined = members_db.joined_members_txn(conn, tenant, room_id) if room else []
    return (room if user in joined else None), joined
