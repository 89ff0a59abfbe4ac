"""Delivery state: the outbox, per-peer status and counters (sync ``*_txn``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs

from swfed.core.canonical import encode_canonical_json
from swfed.storage.tenants import Tenant

HOUR_MS = 3600 * 1000


@attrs.frozen
class Queued:
    id: int
    event_id: str
    room_id: str
    #: the event as sent: canonical JSON bytes, joined as they are into /send
    raw: bytes
    created_at: int

    @property
    def size(self) -> int:
        return len(self.raw)

    def event(self) -> dict[str, Any]:
        """The event parsed (only a refusal needs more than its id and room)."""
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


def outbox_batch_txn(conn: sqlite3.Connection, tenant_id: int, destination: str,
                     limit: int, after: int = 0) -> list[Queued]:
    """The next queued events for ``destination``, in order (rows after ``after``).

    Rows of a room this tenant hosts whose federate flag is off are held:
    skipped, not dropped, until the flag is on again.
    """
    rows = conn.execute(
        "SELECT o.id, o.event_id, o.room_id, o.payload, o.created_at, o.canonical FROM outbox o"
        " WHERE o.tenant_id = ? AND o.destination = ? AND NOT EXISTS (SELECT 1 FROM rooms r"
        " WHERE r.tenant_id = o.tenant_id AND r.room_id = o.room_id AND r.federate = 0"
        " AND r.host = (SELECT server_name FROM tenants t WHERE t.tenant_id = o.tenant_id))"
        " AND o.id > ? ORDER BY o.id LIMIT ?", (tenant_id, destination, after, limit)).fetchall()
    return [Queued(r["id"], r["event_id"],
                   r["room_id"] or str(json.loads(r["payload"]).get("room_id", "")),
                   r["payload"].encode() if r["canonical"] else
                   encode_canonical_json(json.loads(r["payload"])), r["created_at"])
            for r in rows]


def queue_depths_txn(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
    """(tenant_id, destination, queued events) for every non-empty queue."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT tenant_id, destination, COUNT(*) FROM outbox GROUP BY tenant_id, destination")]


def outbox_destinations_txn(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT tenant_id, destination FROM outbox")]


def outbox_done_txn(conn: sqlite3.Connection, tenant_id: int, ids: list[int]) -> None:
    conn.executemany("DELETE FROM outbox WHERE tenant_id = ? AND id = ?",
                     [(tenant_id, i) for i in ids])


def _ensure_peer(conn: sqlite3.Connection, tenant_id: int, server_name: str) -> None:
    conn.execute("INSERT OR IGNORE INTO peers (tenant_id, server_name) VALUES (?, ?)",
                 (tenant_id, server_name))


def count_txn(conn: sqlite3.Connection, tenant_id: int, server_name: str, now: int, *,
              sent: int = 0, received: int = 0) -> None:
    conn.execute(
        "INSERT INTO peer_counts (tenant_id, server_name, hour, sent, received)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, server_name, hour) DO UPDATE SET"
        " sent = sent + excluded.sent, received = received + excluded.received",
        (tenant_id, server_name, now // HOUR_MS, sent, received))


def peer_ok_txn(conn: sqlite3.Connection, tenant_id: int, server_name: str, now: int) -> None:
    """The peer answered or contacted us: clear its error and backoff."""
    _ensure_peer(conn, tenant_id, server_name)
    conn.execute("UPDATE peers SET last_seen = ?, last_error = NULL, failures = 0,"
                 " next_retry_at = NULL WHERE tenant_id = ? AND server_name = ?",
                 (now, tenant_id, server_name))


def peer_failed_txn(conn: sqlite3.Connection, tenant_id: int, server_name: str, now: int,
                    error: str, failures: int, next_retry_at: int) -> None:
    _ensure_peer(conn, tenant_id, server_name)
    conn.execute("UPDATE peers SET last_error = ?, last_error_at = ?, failures = ?,"
                 " next_retry_at = ? WHERE tenant_id = ? AND server_name = ?",
                 (error[:500], now, failures, next_retry_at, tenant_id, server_name))


def peer_state_txn(conn: sqlite3.Connection, tenant_id: int,
                   server_name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM peers WHERE tenant_id = ? AND server_name = ?",
                       (tenant_id, server_name)).fetchone()
    return None if row is None else dict(row)


def peers_view_txn(conn: sqlite3.Connection, tenant: Tenant, now: int) -> list[dict[str, Any]]:
    """Every peer this tenant has talked to or has queued events for."""
    since = now // HOUR_MS - 23
    names = {r[0] for r in conn.execute(
        "SELECT server_name FROM peers WHERE tenant_id = ? UNION"
        " SELECT destination FROM outbox WHERE tenant_id = ?",
        (tenant.tenant_id, tenant.tenant_id))}
    out = []
    for name in sorted(names):
        peer = peer_state_txn(conn, tenant.tenant_id, name) or {}
        counts = conn.execute(
            "SELECT COALESCE(SUM(sent), 0), COALESCE(SUM(received), 0) FROM peer_counts"
            " WHERE tenant_id = ? AND server_name = ? AND hour >= ?",
            (tenant.tenant_id, name, since)).fetchone()
        queue = conn.execute("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE tenant_id = ?"
                             " AND destination = ?", (tenant.tenant_id, name)).fetchone()
        descriptor = json.loads(peer["descriptor"]) if peer.get("descriptor") else {}
        out.append({
            "server_name": name,
            "last_seen": peer.get("last_seen"),
            "last_error": peer.get("last_error"),
            "events_sent_24h": counts[0],
            "events_received_24h": counts[1],
            "queue_depth": queue[0],
            "oldest_queued_at": queue[1],
            "next_retry_at": peer.get("next_retry_at"),
            "failures": peer.get("failures", 0),
            "protocol_versions": descriptor.get("protocol_versions"),
            "key_id": descriptor.get("key_id"),
        })
    return out


def enqueue_txn(conn: sqlite3.Connection, tenant_id: int, destinations: list[str],
                payload: dict[str, Any], now: int) -> None:
    """Queue one event for each of ``destinations``, encoded once (the sender is woken
    after the commit)."""
    text = encode_canonical_json(payload).decode()
    conn.executemany(
        "INSERT INTO outbox (tenant_id, destination, event_id, room_id, payload, created_at,"
        " canonical) VALUES (?, ?, ?, ?, ?, ?, 1)",
        [(tenant_id, destination, payload["event_id"], payload.get("room_id"), text, now)
         for destination in destinations])
