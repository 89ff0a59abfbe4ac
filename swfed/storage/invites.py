"""The ``invites`` table: invites to rooms, to our users or sent by our rooms."""

from __future__ import annotations

import sqlite3

from swfed.core.errors import Conflict, NotFound
from swfed.core.rooms import Room
from swfed.storage.tenants import Tenant


def add_invite_txn(conn: sqlite3.Connection, tenant: Tenant, room: Room, invite_id: str,
                   invitee: str, inviter: str, event_id: str, now: int) -> bool:
    """Keep an invite; False when its id is already known (nothing written)."""
    if conn.execute("SELECT 1 FROM invites WHERE invite_id = ? AND tenant_id = ?",
                    (invite_id, tenant.tenant_id)).fetchone() is not None:
        return False
    conn.execute(
        "INSERT INTO invites (invite_id, tenant_id, room_id, room_name, room_type, host,"
        " invitee, inviter, state, event_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        (invite_id, tenant.tenant_id, room.room_id, room.name, room.type, room.host, invitee,
         inviter, event_id, now))
    return True


def close_invites_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str, invitee: str,
                      state: str) -> None:
    conn.execute("UPDATE invites SET state = ? WHERE tenant_id = ? AND room_id = ?"
                 " AND invitee = ? AND state = 'pending'",
                 (state, tenant.tenant_id, room_id, invitee))


def end_invite_txn(conn: sqlite3.Connection, tenant: Tenant, invite_id: str,
                   state: str) -> None:
    """A pending invite ended (refused by the invitee's server, or cancelled)."""
    conn.execute("UPDATE invites SET state = ? WHERE tenant_id = ? AND invite_id = ?"
                 " AND state = 'pending'", (state, tenant.tenant_id, invite_id))


def invite_txn(conn: sqlite3.Connection, tenant: Tenant, invite_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM invites WHERE tenant_id = ? AND invite_id = ?",
        (tenant.tenant_id, invite_id)).fetchone()
    return row


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


def pending_invite_to_room_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                               invitee: str) -> str | None:
    """The id of ``invitee``'s pending invite to the room, if any."""
    row = conn.execute("SELECT invite_id FROM invites WHERE tenant_id = ? AND room_id = ?"
                       " AND invitee = ? AND state = 'pending'",
                       (tenant.tenant_id, room_id, invitee)).fetchone()
    return None if row is None else str(row[0])
