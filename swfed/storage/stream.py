"""A tenant's stream: positions (SSE ids) and what one user's stream holds."""

from __future__ import annotations

from typing import Any

from swfed.storage.conn import Conn
from swfed.storage.events import event_json
from swfed.storage.notifications import notification_json
from swfed.storage.tenants import Tenant


def next_pos_txn(conn: Conn, tenant: Tenant) -> int:
    """Take the tenant's next stream position (SSE id)."""
    return take_positions_txn(conn, tenant, 1)


def take_positions_txn(conn: Conn, tenant: Tenant, n: int) -> int:
    """Take ``n`` consecutive stream positions; returns the first."""
    row = conn.execute("UPDATE tenants SET stream_pos = stream_pos + ? WHERE tenant_id = ?"
                       " RETURNING stream_pos", (n, tenant.tenant_id)).fetchone()
    conn.touched.stream(tenant.tenant_id)  # the commit wakes this tenant's streams
    return int(row[0]) - n + 1


def stream_txn(conn: Conn, tenant: Tenant, local_id: str, after: int,
               limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Everything for one user after stream position ``after``, in order.

    Returns (pos, kind, payload) with kind ``event``, ``notification`` (again, under
    its ``seen_pos``, once seen) or ``read`` (the user's read marker of a room moved:
    ``{room_id, read_seq}``).
    Each kind is read up to ``limit`` and the merge cut to ``limit``: if an
    item at or below the last returned position were missing, its kind's
    list would be full with items all below it, and then the merge would
    hold more than ``limit`` items. So nothing is skipped.

    An event that changed status comes again under its new position. A
    refused one comes to everyone in the room (they may have shown it while
    it was pending), marked ``refused``: a client keeps it only for its
    sender, as ``GET …/messages`` does.
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
    seen = conn.execute(
        "SELECT * FROM notifications WHERE tenant_id = ? AND local_id = ? AND seen_pos > ?"
        " ORDER BY seen_pos LIMIT ?", (tenant.tenant_id, local_id, after, limit)).fetchall()
    reads = conn.execute(
        "SELECT room_id, seq, pos FROM read_markers WHERE tenant_id = ? AND member = ?"
        " AND pos > ? ORDER BY pos LIMIT ?", (tenant.tenant_id, fqid, after, limit)).fetchall()
    merged = [(r["pos"], "event", event_json(r)) for r in events]
    merged += [(r["pos"], "notification", notification_json(r)) for r in notes]
    merged += [(r["seen_pos"], "notification", notification_json(r)) for r in seen]
    merged += [(r["pos"], "read", {"room_id": r["room_id"], "read_seq": int(r["seq"])})
               for r in reads]
    merged.sort(key=lambda item: item[0])
    return merged[:limit]


def stream_head_txn(conn: Conn, tenant: Tenant) -> int:
    row = conn.execute("SELECT stream_pos FROM tenants WHERE tenant_id = ?",
                       (tenant.tenant_id,)).fetchone()
    return int(row[0])
