"""The ``invites`` table: invites to rooms, to our users or sent by our rooms.

An invite is keyed by (room, invite id) (migration 10): only a room's host
makes invites into it, so a server hosting another room cannot take, end or
answer an invite of this one by reusing its id.
"""

from __future__ import annotations

from swfed.core.errors import Conflict, NotFound
from swfed.core.rooms import Room
from swfed.storage.conn import Conn, Row
from swfed.storage.tenants import Tenant


def add_invite_txn(conn: Conn, tenant: Tenant, room: Room, invite_id: str,
                   invitee: str, inviter: str, event_id: str, now: int) -> bool:
    """Keep an invite; False when the room already has one with its id (nothing written)."""
    if invite_txn(conn, tenant, room.room_id, invite_id) is not None:
        return False
    conn.execute(
        "INSERT INTO invites (invite_id, tenant_id, room_id, room_name, room_type, host,"
        " invitee, inviter, state, event_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        (invite_id, tenant.tenant_id, room.room_id, room.name, room.type, room.host, invitee,
         inviter, event_id, now))
    return True


def close_invites_txn(conn: Conn, tenant: Tenant, room_id: str, invitee: str,
                      state: str) -> None:
    conn.execute("UPDATE invites SET state = ? WHERE tenant_id = ? AND room_id = ?"
                 " AND invitee = ? AND state = 'pending'",
                 (state, tenant.tenant_id, room_id, invitee))


def end_invite_txn(conn: Conn, tenant: Tenant, room_id: str, invite_id: str,
                   state: str) -> None:
    """A pending invite of the room ended (refused by the invitee's server, or cancelled)."""
    conn.execute("UPDATE invites SET state = ? WHERE tenant_id = ? AND room_id = ?"
                 " AND invite_id = ? AND state = 'pending'",
                 (state, tenant.tenant_id, room_id, invite_id))


def invite_txn(conn: Conn, tenant: Tenant, room_id: str,
               invite_id: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT * FROM invites WHERE tenant_id = ? AND room_id = ? AND invite_id = ?",
        (tenant.tenant_id, room_id, invite_id)).fetchone()
    return row


def pending_invite_txn(conn: Conn, tenant: Tenant, invite_id: str,
                       invitee: str, room_id: str | None = None) -> Row:
    """A pending invite addressed to ``invitee`` (into ``room_id``, if given).

    Raises SW_INVITE_NOT_FOUND, SW_INVITE_NOT_PENDING, and SW_INVITE_AMBIGUOUS
    when invites into several rooms carry this id (another host reused it)
    and the room is not named.
    """
    sql = "SELECT * FROM invites WHERE tenant_id = ? AND invite_id = ? AND invitee = ?"
    args: tuple[object, ...] = (tenant.tenant_id, invite_id, invitee)
    if room_id is not None:
        sql += " AND room_id = ?"
        args += (room_id,)
    rows = conn.execute(sql + " ORDER BY room_id", args).fetchall()
    if not rows:
        raise NotFound(f"no invite {invite_id} for you", code="SW_INVITE_NOT_FOUND")
    pending = [r for r in rows if r["state"] == "pending"]
    if len(pending) > 1:
        rooms = ", ".join(str(r["room_id"]) for r in pending)
        raise Conflict(f"invites into several rooms carry the id {invite_id} ({rooms}): "
                       "name the room (?room_id=…), or join it with "
                       "POST /v1/rooms/{room_id}/join", code="SW_INVITE_AMBIGUOUS")
    if not pending:
        raise Conflict(f"invite {invite_id} was already {rows[0]['state']}",
                       code="SW_INVITE_NOT_PENDING")
    return pending[0]


def pending_invite_to_room_txn(conn: Conn, tenant: Tenant, room_id: str,
                               invitee: str) -> str | None:
    """The id of ``invitee``'s pending invite to the room, if any."""
    row = conn.execute("SELECT invite_id FROM invites WHERE tenant_id = ? AND room_id = ?"
                       " AND invitee = ? AND state = 'pending'",
                       (tenant.tenant_id, room_id, invitee)).fetchone()
    return None if row is None else str(row[0])
