"""The ``events`` table: every event of every room a tenant knows, in host order.

``seq`` is the host's order within the room; ``pos`` the tenant's stream
position; ``signed`` the event as its origin signed it, kept verbatim for
relaying and backfill.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from swfed.core.rooms import PENDING_SEQ
from swfed.storage.tenants import Tenant


def event_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"event_id": row["event_id"], "room_id": row["room_id"], "type": row["type"],
            "sender": row["sender"], "origin_ts": row["origin_ts"],
            "content": json.loads(row["content"]), "seq": row["seq"]}


def has_event_txn(conn: sqlite3.Connection, tenant: Tenant, event_id: str) -> bool:
    return conn.execute("SELECT 1 FROM events WHERE tenant_id = ? AND event_id = ?",
                        (tenant.tenant_id, event_id)).fetchone() is not None


def event_seq_txn(conn: sqlite3.Connection, tenant: Tenant, event_id: str) -> int | None:
    row = conn.execute("SELECT seq FROM events WHERE tenant_id = ? AND event_id = ?",
                       (tenant.tenant_id, event_id)).fetchone()
    return None if row is None else int(row[0])


def insert_event_txn(conn: sqlite3.Connection, tenant: Tenant, event: dict[str, Any],
                     signed: dict[str, Any] | None, seq: int, pos: int, now: int) -> int:
    """Insert one event row; returns its rowid (for the search index)."""
    cur = conn.execute(
        "INSERT INTO events (tenant_id, pos, room_id, event_id, seq, type, sender, origin,"
        " origin_ts, content, signed, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant.tenant_id, pos, event["room_id"], event["event_id"], seq, event["type"],
         event["sender"], event["origin"], event["origin_ts"],
         json.dumps(event["content"], ensure_ascii=False),
         None if signed is None else json.dumps(signed, ensure_ascii=False), now))
    return int(cur.lastrowid or 0)


def set_host_seq_txn(conn: sqlite3.Connection, tenant: Tenant, event_id: str, seq: int) -> None:
    """The host ordered one of our events: adopt its sequence number."""
    conn.execute("UPDATE events SET seq = ? WHERE tenant_id = ? AND event_id = ? AND seq >= ?",
                 (seq, tenant.tenant_id, event_id, PENDING_SEQ))


def event_in_room_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                      event_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND event_id = ?", (tenant.tenant_id, room_id, event_id)).fetchone()
    return None if row is None else event_json(row)


def reaction_of_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str, sender: str,
                    content: dict[str, Any]) -> dict[str, Any] | None:
    """``sender``'s reaction with exactly this content, if they made it already."""
    for row in conn.execute(
            "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND type = 'reaction'"
            " AND sender = ?", (tenant.tenant_id, room_id, sender)):
        if json.loads(row["content"]) == content:
            return event_json(row)
    return None


def messages_page_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Events newest first (host order), ``limit`` of them before seq ``before``."""
    rows = conn.execute(
        "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND seq < ?"
        " ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    events = [event_json(r) for r in rows[:limit]]
    nxt = events[-1]["seq"] if len(rows) > limit else None
    return events, nxt


def signed_page_txn(conn: sqlite3.Connection, tenant: Tenant, room_id: str,
                    before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Signed history of a room, newest first, each with its ``unsigned.seq``."""
    rows = conn.execute(
        "SELECT signed, seq FROM events WHERE tenant_id = ? AND room_id = ? AND seq < ?"
        " AND signed IS NOT NULL ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    events = [{**json.loads(r["signed"]), "unsigned": {"seq": r["seq"]}} for r in rows[:limit]]
    nxt = rows[limit - 1]["seq"] if len(rows) > limit else None
    return events, nxt
