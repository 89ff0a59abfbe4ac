"""The ``events`` table: every event of every room a tenant knows, in host order.

``seq`` is the host's order within the room; ``pos`` the tenant's stream
position; ``signed`` the event as its origin signed it, kept verbatim for
relaying and backfill.
"""

from __future__ import annotations

import json
from typing import Any

from swfed.core.rooms import PENDING_SEQ
from swfed.storage.conn import Conn, Row
from swfed.storage.tenants import Tenant

#: Who sees an event: everyone in the room, except a refused one, which
#: only its sender still sees (marked). One parameter: the viewer's fqid.
VISIBLE = "(e.status != 'refused' OR e.sender = ?)"


def event_json(row: Row) -> dict[str, Any]:
    out = {"event_id": row["event_id"], "room_id": row["room_id"], "type": row["type"],
           "sender": row["sender"], "origin_ts": row["origin_ts"],
           "content": json.loads(row["content"]), "seq": row["seq"], "status": row["status"]}
    if row["error"] is not None:
        out["error"] = json.loads(row["error"])
    return out


def has_event_txn(conn: Conn, tenant: Tenant, room_id: str,
                  event_id: str) -> bool:
    """Event ids are unique within a room: a server can only squat ids in rooms it hosts."""
    return conn.execute("SELECT 1 FROM events WHERE tenant_id = ? AND room_id = ?"
                        " AND event_id = ?", (tenant.tenant_id, room_id, event_id)
                        ).fetchone() is not None


def stored_ids_txn(conn: Conn, tenant: Tenant,
                   keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (room_id, event_id) are stored here."""
    found: set[tuple[str, str]] = set()
    for room_id in {r for r, _ in keys}:
        ids = [e for r, e in keys if r == room_id]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update((room_id, row[0]) for row in conn.execute(
                "SELECT event_id FROM events WHERE tenant_id = ? AND room_id = ? AND event_id"
                f" IN ({','.join('?' * len(chunk))})", (tenant.tenant_id, room_id, *chunk)))
    return found


def stored_txn(conn: Conn, tenant: Tenant, room_id: str,
               event_id: str) -> tuple[int, dict[str, Any] | None] | None:
    """(seq, the event as its origin signed it) of a stored event, if any."""
    row = conn.execute("SELECT seq, signed FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND event_id = ?", (tenant.tenant_id, room_id, event_id)).fetchone()
    if row is None:
        return None
    return int(row[0]), None if row[1] is None else json.loads(row[1])


_INSERT = ("INSERT INTO events (tenant_id, pos, room_id, event_id, seq, type, sender, origin,"
           " origin_ts, content, signed, received_at, status, applied)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _event_row(tenant: Tenant, event: dict[str, Any], signed: dict[str, Any] | None, seq: int,
               pos: int, now: int, status: str, applied: bool) -> tuple[Any, ...]:
    return (tenant.tenant_id, pos, event["room_id"], event["event_id"], seq, event["type"],
            event["sender"], event["origin"], event["origin_ts"],
            json.dumps(event["content"], ensure_ascii=False),
            None if signed is None else json.dumps(signed, ensure_ascii=False), now, status,
            int(applied))


def insert_event_txn(conn: Conn, tenant: Tenant, event: dict[str, Any],
                     signed: dict[str, Any] | None, seq: int, pos: int, now: int,
                     status: str = "sent", applied: bool = True) -> int:
    """Insert one event row; returns its rowid (for the search index)."""
    row = conn.execute(_INSERT + " RETURNING rowid_",
                       _event_row(tenant, event, signed, seq, pos, now, status,
                                  applied)).fetchone()
    return int(row[0])


def insert_run_txn(conn: Conn, tenant: Tenant,
                   run: list[tuple[dict[str, Any], dict[str, Any], int, int]],
                   now: int) -> dict[int, int]:
    """Insert many applied events, (event, signed, seq, pos) each; returns pos → rowid."""
    conn.executemany(_INSERT, [_event_row(tenant, event, signed, seq, pos, now, "sent", True)
                               for event, signed, seq, pos in run])
    low, high = min(r[3] for r in run), max(r[3] for r in run)
    return {int(pos): int(rowid) for rowid, pos in conn.execute(
        "SELECT rowid_, pos FROM events WHERE tenant_id = ? AND pos BETWEEN ? AND ?",
        (tenant.tenant_id, low, high))}


def is_pending_txn(conn: Conn, tenant: Tenant, room_id: str,
                   event_id: str) -> bool:
    """Is this event of ours still awaiting the host's answer?"""
    return conn.execute("SELECT 1 FROM events WHERE tenant_id = ? AND room_id = ?"
                        " AND event_id = ? AND status = 'pending'",
                        (tenant.tenant_id, room_id, event_id)).fetchone() is not None


def settle_txn(conn: Conn, tenant: Tenant, room_id: str, event_id: str,
               pos: int, *, seq: int | None = None,
               error: dict[str, str] | None = None) -> None:
    """The host answered for one of our pending events: ordered (``seq``) or refused.

    The event takes a new stream position, so streams carry the change.
    """
    if error is None:
        conn.execute("UPDATE events SET seq = ?, status = 'sent', pos = ? WHERE tenant_id = ?"
                     " AND room_id = ? AND event_id = ? AND status = 'pending'",
                     (seq, pos, tenant.tenant_id, room_id, event_id))
    else:
        conn.execute("UPDATE events SET status = 'refused', error = ?, pos = ?"
                     " WHERE tenant_id = ? AND room_id = ? AND event_id = ?"
                     " AND status = 'pending'", (json.dumps(error, ensure_ascii=False), pos,
                                                 tenant.tenant_id, room_id, event_id))


def at_seq_txn(conn: Conn, tenant: Tenant, room_id: str,
               seq: int) -> tuple[dict[str, Any], bool] | None:
    """The room's event at host seq ``seq`` (as a plain event) and whether it is applied."""
    row = conn.execute("SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND seq = ?",
                       (tenant.tenant_id, room_id, seq)).fetchone()
    if row is None:
        return None
    event = {"event_id": row["event_id"], "room_id": row["room_id"], "type": row["type"],
             "sender": row["sender"], "origin": row["origin"], "origin_ts": row["origin_ts"],
             "content": json.loads(row["content"])}
    return event, bool(row["applied"])


def event_at_seq_txn(conn: Conn, tenant: Tenant, room_id: str,
                     seq: int) -> str | None:
    """The id of the room's event at host seq ``seq``, if any (a seq names one event)."""
    row = conn.execute("SELECT event_id FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND seq = ?", (tenant.tenant_id, room_id, seq)).fetchone()
    return None if row is None else str(row[0])


def refused_from_txn(conn: Conn, tenant: Tenant, peer: str,
                     event_id: str) -> bool:
    """Did we refuse event ``event_id`` sent by ``peer`` (``fed_rejected``)?"""
    return conn.execute("SELECT 1 FROM fed_rejected WHERE tenant_id = ? AND peer = ?"
                        " AND event_id = ? LIMIT 1", (tenant.tenant_id, peer, event_id)
                        ).fetchone() is not None


def mark_applied_txn(conn: Conn, tenant: Tenant, room_id: str,
                     event_id: str) -> None:
    conn.execute("UPDATE events SET applied = 1 WHERE tenant_id = ? AND room_id = ?"
                 " AND event_id = ?", (tenant.tenant_id, room_id, event_id))


def events_after_seq_txn(conn: Conn, tenant: Tenant, room_id: str,
                         seq: int) -> list[str]:
    """Ids of the room's host-ordered events after ``seq``, in order."""
    return [r[0] for r in conn.execute(
        "SELECT event_id FROM events WHERE tenant_id = ? AND room_id = ? AND seq > ?"
        " AND seq < ? ORDER BY seq", (tenant.tenant_id, room_id, seq, PENDING_SEQ))]


def set_pos_txn(conn: Conn, tenant: Tenant, room_id: str, event_id: str,
                pos: int) -> None:
    conn.execute("UPDATE events SET pos = ? WHERE tenant_id = ? AND room_id = ? AND event_id = ?",
                 (pos, tenant.tenant_id, room_id, event_id))


def event_in_room_txn(conn: Conn, tenant: Tenant, room_id: str,
                      event_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND event_id = ?", (tenant.tenant_id, room_id, event_id)).fetchone()
    return None if row is None else event_json(row)


def reaction_of_txn(conn: Conn, tenant: Tenant, room_id: str, sender: str,
                    content: dict[str, Any]) -> dict[str, Any] | None:
    """``sender``'s reaction with exactly this content, if they made it already."""
    for row in conn.execute(
            "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND type = 'reaction'"
            " AND sender = ?", (tenant.tenant_id, room_id, sender)):
        if json.loads(row["content"]) == content:
            return event_json(row)
    return None


def messages_page_txn(conn: Conn, tenant: Tenant, room_id: str, viewer: str,
                      before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Events ``viewer`` sees, newest first (host order), ``limit`` of them before ``before``."""
    rows = conn.execute(
        f"SELECT * FROM events e WHERE tenant_id = ? AND room_id = ? AND seq < ? AND {VISIBLE}"
        " ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, before if before is not None else 2**62, viewer,
         limit + 1)).fetchall()
    events = [event_json(r) for r in rows[:limit]]
    nxt = events[-1]["seq"] if len(rows) > limit else None
    return events, nxt


#: What a history page serves of an event: as signed, or a deleted one's tombstone
#: (its signed copy is gone; core.events.check_tombstone).
_SERVED = ("(signed IS NOT NULL OR content LIKE '{\"deleted\": %')")


def _served(row: Row) -> dict[str, Any]:
    if row["signed"] is not None:
        return {**json.loads(row["signed"]), "unsigned": {"seq": row["seq"]}}
    return {"event_id": row["event_id"], "room_id": row["room_id"], "type": row["type"],
            "sender": row["sender"], "origin": row["origin"], "origin_ts": row["origin_ts"],
            "content": json.loads(row["content"]), "unsigned": {"seq": row["seq"]}}


def signed_page_txn(conn: Conn, tenant: Tenant, room_id: str,
                    before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Signed history of a room, newest first, each with its ``unsigned.seq``."""
    rows = conn.execute(
        "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND seq < ?"
        f" AND {_SERVED} AND status = 'sent' ORDER BY seq DESC LIMIT ?",
        (tenant.tenant_id, room_id, min(before if before is not None else 2**62, PENDING_SEQ),
         limit + 1)).fetchall()
    events = [_served(r) for r in rows[:limit]]
    nxt = rows[limit - 1]["seq"] if len(rows) > limit else None
    return events, nxt


def signed_after_txn(conn: Conn, tenant: Tenant, room_id: str, after: int,
                     limit: int) -> list[dict[str, Any]]:
    """Signed events of a room after seq ``after``, oldest first (gap repair)."""
    rows = conn.execute(
        "SELECT * FROM events WHERE tenant_id = ? AND room_id = ? AND seq > ?"
        f" AND seq < ? AND {_SERVED} AND status = 'sent' ORDER BY seq LIMIT ?",
        (tenant.tenant_id, room_id, after, PENDING_SEQ, limit)).fetchall()
    return [_served(r) for r in rows]


def max_host_seq_txn(conn: Conn, tenant: Tenant, room_id: str) -> int:
    """The highest host-ordered seq of the room in our copy (0 if none)."""
    row = conn.execute("SELECT MAX(seq) FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND seq < ?", (tenant.tenant_id, room_id, PENDING_SEQ)).fetchone()
    return int(row[0] or 0)


def member_events_of_txn(conn: Conn, tenant: Tenant, room_id: str,
                         server: str) -> list[tuple[int, str, str]]:
    """(seq, sender, membership) of the member events of ``server``'s users, in host order."""
    rows = conn.execute(
        "SELECT seq, sender, content FROM events"
        " WHERE tenant_id = ? AND room_id = ? AND type = 'member' AND origin = ?"
        " AND seq < ? AND status = 'sent' ORDER BY seq",
        (tenant.tenant_id, room_id, server, PENDING_SEQ)).fetchall()
    return [(int(r[0]), str(r[1]), str(json.loads(r[2]).get("membership"))) for r in rows]


def change_target_txn(conn: Conn, tenant: Tenant, room_id: str,
                      event_id: str) -> tuple[int, dict[str, Any]] | None:
    """(rowid, the event as shown) of the event an edit or delete points at, if held."""
    row = conn.execute("SELECT * FROM events WHERE tenant_id = ? AND room_id = ?"
                       " AND event_id = ?", (tenant.tenant_id, room_id, event_id)).fetchone()
    return None if row is None else (int(row["rowid_"]), event_json(row))


def set_shown_txn(conn: Conn, tenant: Tenant, room_id: str, event_id: str,
                  content: dict[str, Any], pos: int, *, drop_signed: bool = False) -> None:
    """Replace what an event shows (an edit, a tombstone); it takes a new stream
    position, so streams carry the change. ``drop_signed``: its signed copy goes too
    (a delete: no copy keeps the words)."""
    conn.execute("UPDATE events SET content = ?, pos = ?"
                 + (", signed = NULL" if drop_signed else "")
                 + " WHERE tenant_id = ? AND room_id = ? AND event_id = ?",
                 (json.dumps(content, ensure_ascii=False), pos, tenant.tenant_id, room_id,
                  event_id))


def edits_of_txn(conn: Conn, tenant: Tenant, room_id: str,
                 target: str) -> list[tuple[str, dict[str, Any]]]:
    """(event id, content) of every edit event of ``target`` here, in host order."""
    out = []
    for row in conn.execute("SELECT event_id, content FROM events WHERE tenant_id = ?"
                            " AND room_id = ? AND type = 'edit' ORDER BY seq",
                            (tenant.tenant_id, room_id)):
        content = json.loads(row["content"])
        if content.get("relates_to") == target:
            out.append((str(row["event_id"]), content))
    return out
