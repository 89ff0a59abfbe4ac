"""The ``members`` table: who is in (or invited to) which room, as fqids."""

from __future__ import annotations

from typing import Any

from swfed.core.ids import Fqid
from swfed.core.rooms import room_not_found, server_of
from swfed.storage.conn import Conn
from swfed.storage.tenants import Tenant


def membership_txn(conn: Conn, tenant: Tenant, room_id: str,
                   member: str) -> str | None:
    row = conn.execute(
        "SELECT membership FROM members WHERE tenant_id = ? AND room_id = ? AND member = ?",
        (tenant.tenant_id, room_id, member)).fetchone()
    return None if row is None else str(row[0])


def memberships_txn(conn: Conn, tenant: Tenant, room_id: str,
                    members: list[str]) -> dict[str, str | None]:
    return {m: membership_txn(conn, tenant, room_id, m) for m in members}


def set_membership_txn(conn: Conn, tenant: Tenant, room_id: str, member: str,
                       membership: str, now: int, display_name: str | None = None) -> None:
    foreign = server_of(member) != tenant.server_name
    conn.execute(
        "INSERT INTO members (tenant_id, room_id, member, membership, foreign_, display_name,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, room_id, member)"
        " DO UPDATE SET membership = excluded.membership, updated_at = excluded.updated_at,"
        " display_name = COALESCE(excluded.display_name, members.display_name)",
        (tenant.tenant_id, room_id, member, membership, int(foreign), display_name, now))


def members_txn(conn: Conn, tenant: Tenant, room_id: str,
                viewer: str) -> list[dict[str, Any]]:
    """The room's joined and invited members, for a joined ``viewer``."""
    if membership_txn(conn, tenant, room_id, viewer) != "join":
        raise room_not_found(room_id)
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


def members_for_peer_txn(conn: Conn, tenant: Tenant,
                         room_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT member, membership, display_name FROM members WHERE"
                        " tenant_id = ? AND room_id = ? AND membership IN ('join', 'invite')"
                        " ORDER BY updated_at, member", (tenant.tenant_id, room_id)).fetchall()
    return [{"fqid": r[0], "membership": r[1], "display_name": r[2]} for r in rows]


def joined_members_txn(conn: Conn, tenant: Tenant, room_id: str) -> list[str]:
    return sorted(r[0] for r in conn.execute(
        "SELECT member FROM members WHERE tenant_id = ? AND room_id = ?"
        " AND membership = 'join'", (tenant.tenant_id, room_id)))


def member_servers_txn(conn: Conn, tenant: Tenant, room_id: str,
                       memberships: tuple[str, ...] = ("join",)) -> set[str]:
    marks = ",".join("?" * len(memberships))
    rows = conn.execute(
        f"SELECT member FROM members WHERE tenant_id = ? AND room_id = ?"
        f" AND membership IN ({marks})", (tenant.tenant_id, room_id, *memberships)).fetchall()
    return {server_of(r[0]) for r in rows}


def local_joined_txn(conn: Conn, tenant: Tenant, room_id: str) -> bool:
    """Whether a user of ours is joined to the room (in our copy)."""
    return conn.execute("SELECT 1 FROM members WHERE tenant_id = ? AND room_id = ?"
                        " AND foreign_ = 0 AND membership = 'join' LIMIT 1",
                        (tenant.tenant_id, room_id)).fetchone() is not None


def foreign_count_txn(conn: Conn, tenant: Tenant, room_id: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM members WHERE tenant_id = ? AND room_id = ?"
                       " AND foreign_ = 1 AND membership IN ('join', 'invite')",
                       (tenant.tenant_id, room_id)).fetchone()
    return int(row[0])
