"""The ``rooms`` table: a room as one tenant knows it, its flag and its order counter."""

from __future__ import annotations

from swfed.core.rooms import Room, room_not_found
from swfed.storage.conn import Conn, Row
from swfed.storage.members import membership_txn
from swfed.storage.tenants import Tenant


def _room(conn: Conn, row: Row) -> Room:
    foreign = conn.execute(
        "SELECT 1 FROM members WHERE tenant_id = ? AND room_id = ? AND foreign_ = 1"
        " AND membership = 'join' LIMIT 1", (row["tenant_id"], row["room_id"])).fetchone()
    return Room(row["room_id"], row["name"], row["type"], bool(row["federate"]), row["host"],
                row["creator"], row["created_at"], foreign is not None, row["synced_seq"])


def room_txn(conn: Conn, tenant: Tenant, room_id: str) -> Room | None:
    row = conn.execute("SELECT * FROM rooms WHERE tenant_id = ? AND room_id = ?",
                       (tenant.tenant_id, room_id)).fetchone()
    return None if row is None else _room(conn, row)


def known_rooms_txn(conn: Conn, tenant: Tenant,
                    room_ids: set[str]) -> set[str]:
    """Which of these rooms this tenant holds (hosts or has a copy of)."""
    ids = sorted(room_ids)[:500]  # a /send holds at most 100 events
    if not ids:
        return set()
    return {row[0] for row in conn.execute(
        "SELECT room_id FROM rooms WHERE tenant_id = ? AND room_id IN"
        f" ({','.join('?' * len(ids))})", (tenant.tenant_id, *ids))}


def joined_room_txn(conn: Conn, tenant: Tenant, room_id: str,
                    member: str) -> Room:
    """The room, if ``member`` has joined it; else SW_ROOM_NOT_FOUND."""
    if membership_txn(conn, tenant, room_id, member) != "join":
        raise room_not_found(room_id)
    room = room_txn(conn, tenant, room_id)
    if room is None:
        raise room_not_found(room_id)
    return room


def insert_room_txn(conn: Conn, tenant: Tenant, room: Room) -> None:
    conn.execute(
        "INSERT INTO rooms (tenant_id, room_id, name, type, federate, host, creator, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant.tenant_id, room.room_id, room.name, room.type, int(room.federate), room.host,
         room.creator, room.created_at))


def rooms_of_txn(conn: Conn, tenant: Tenant, member: str) -> list[Room]:
    rows = conn.execute(
        "SELECT r.* FROM rooms r JOIN members m ON m.tenant_id = r.tenant_id"
        " AND m.room_id = r.room_id WHERE r.tenant_id = ? AND m.member = ?"
        " AND m.membership = 'join' ORDER BY r.created_at, r.room_id",
        (tenant.tenant_id, member)).fetchall()
    return [_room(conn, r) for r in rows]


def set_federate_flag_txn(conn: Conn, tenant: Tenant, room_id: str,
                          federate: bool) -> None:
    conn.execute("UPDATE rooms SET federate = ? WHERE tenant_id = ? AND room_id = ?",
                 (int(federate), tenant.tenant_id, room_id))


def set_synced_txn(conn: Conn, tenant: Tenant, room_id: str,
                   synced: int) -> None:
    conn.execute("UPDATE rooms SET synced_seq = ? WHERE tenant_id = ? AND room_id = ?",
                 (synced, tenant.tenant_id, room_id))


def last_seq_txn(conn: Conn, tenant: Tenant, room_id: str) -> int:
    row = conn.execute("SELECT last_seq FROM rooms WHERE tenant_id = ? AND room_id = ?",
                       (tenant.tenant_id, room_id)).fetchone()
    return 0 if row is None else int(row[0])


def remote_rooms_txn(conn: Conn, tenant: Tenant) -> list[Room]:
    """Rooms hosted elsewhere in which one of our users has joined."""
    rows = conn.execute(
        "SELECT r.* FROM rooms r WHERE r.tenant_id = ? AND r.host != ? AND EXISTS (SELECT 1"
        " FROM members m WHERE m.tenant_id = r.tenant_id AND m.room_id = r.room_id"
        " AND m.foreign_ = 0 AND m.membership = 'join')",
        (tenant.tenant_id, tenant.server_name)).fetchall()
    return [_room(conn, r) for r in rows]


def next_seq_txn(conn: Conn, tenant: Tenant, room_id: str) -> int:
    """The host's next order number in a room it hosts."""
    row = conn.execute("UPDATE rooms SET last_seq = last_seq + 1 WHERE tenant_id = ?"
                       " AND room_id = ? RETURNING last_seq",
                       (tenant.tenant_id, room_id)).fetchone()
    return int(row[0])
