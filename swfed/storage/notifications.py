"""The ``notifications`` table: invites and mentions, per local user."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from swfed.core.ids import new_uuid
from swfed.storage.conn import Conn, Row
from swfed.storage.tenants import Tenant


def add_notification_txn(conn: Conn, tenant: Tenant, local_id: str, type_: str,
                         sender: str, now: int, pos: int, *, room_id: str | None = None,
                         event_id: str | None = None, invite_id: str | None = None,
                         details: dict[str, Any] | None = None) -> str:
    notification_id = new_uuid()
    conn.execute(
        "INSERT INTO notifications (notification_id, tenant_id, local_id, pos, type, room_id,"
        " event_id, invite_id, sender, details, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (notification_id, tenant.tenant_id, local_id, pos, type_, room_id, event_id, invite_id,
         sender, None if not details else json.dumps(details, ensure_ascii=False), now))
    return notification_id


def notification_json(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {"notification_id": row["notification_id"], "type": row["type"],
                           "room_id": row["room_id"], "from": row["sender"],
                           "created_at": row["created_at"], "seen": bool(row["seen"])}
    if row["event_id"] is not None:
        out["event_id"] = row["event_id"]
    if row["invite_id"] is not None:
        out["invite_id"] = row["invite_id"]
    if row["details"] is not None:
        out.update({k: v for k, v in json.loads(row["details"]).items() if k not in out})
    return out


def notifications_txn(conn: Conn, tenant: Tenant, local_id: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    rows = conn.execute(
        "SELECT * FROM notifications WHERE tenant_id = ? AND local_id = ? AND pos < ?"
        " ORDER BY pos DESC LIMIT ?",
        (tenant.tenant_id, local_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    out = [notification_json(r) for r in rows[:limit]]
    nxt = rows[limit - 1]["pos"] if len(rows) > limit else None
    return out, nxt


def drop_event_notifications_txn(conn: Conn, tenant: Tenant, room_id: str,
                                 event_id: str) -> None:
    """A deleted message mentions nobody any more: its mention notifications go."""
    conn.execute("DELETE FROM notifications WHERE tenant_id = ? AND room_id = ?"
                 " AND event_id = ? AND type = 'mention'", (tenant.tenant_id, room_id, event_id))


def mark_seen_txn(conn: Conn, tenant: Tenant, local_id: str,
                  notification_ids: list[str] | None, first_pos: Callable[[int], int]) -> int:
    """Mark the user's notifications seen (these, or all); returns how many changed.

    Each takes a new stream position (``seen_pos``, from ``first_pos(n)``: n
    consecutive ones), so every device of the user hears of it.
    """
    rows = conn.execute("SELECT notification_id FROM notifications WHERE tenant_id = ?"
                        " AND local_id = ? AND seen = 0 ORDER BY pos",
                        (tenant.tenant_id, local_id)).fetchall()
    wanted = None if notification_ids is None else set(notification_ids)
    ids = [str(r[0]) for r in rows if wanted is None or r[0] in wanted]
    if not ids:
        return 0
    pos = first_pos(len(ids))
    conn.executemany("UPDATE notifications SET seen = 1, seen_pos = ? WHERE tenant_id = ?"
                     " AND notification_id = ?",
                     [(pos + i, tenant.tenant_id, nid) for i, nid in enumerate(ids)])
    return len(ids)

