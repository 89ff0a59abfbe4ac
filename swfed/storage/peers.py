"""Delivery state: the outbox, per-peer status and counters (sync ``*_txn``).

The outbox is two tables (migration 8): ``outbox_events`` holds each queued
event once, as the canonical JSON sent, with the number of destinations yet
to settle it (``pending``); ``outbox`` holds one small row per destination
(its ``id`` orders that destination's queue). A destination's row leaves
when the peer settled the event; the event's row leaves with the last one.
A room shared with fifty servers thus writes an event's bytes once, not
fifty times.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import attrs

from swfed.core.backoff import RetryState
from swfed.core.canonical import encode_canonical_json
from swfed.storage.conn import Conn
from swfed.storage.tenants import Tenant

HOUR_MS = 3600 * 1000
#: Ids bound in one ``IN (...)`` (SQLite's older builds allow 999 variables).
_CHUNK = 500


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


def _raw(payload: str | bytes, canonical: int) -> bytes:
    """The bytes to send: stored canonical JSON as it is (a BLOB since migration 8,
    TEXT before), or an older swfed's ``json.dumps`` text encoded again."""
    if not canonical:
        return encode_canonical_json(json.loads(payload))
    return payload if isinstance(payload, bytes) else payload.encode()


def outbox_batch_txn(conn: Conn, tenant_id: int, destination: str,
                     limit: int, after: int = 0) -> list[Queued]:
    """The next queued events for ``destination``, in order (rows after ``after``).

    Rows of a room this tenant hosts whose federate flag is off are held:
    skipped, not dropped, until the flag is on again.
    """
    rows = conn.execute(
        "SELECT o.id, e.event_id, e.room_id, e.payload, e.created_at, e.canonical"
        " FROM outbox o JOIN outbox_events e ON e.id = o.event"
        " WHERE o.tenant_id = ? AND o.destination = ? AND NOT EXISTS (SELECT 1 FROM rooms r"
        " WHERE r.tenant_id = o.tenant_id AND r.room_id = e.room_id AND r.federate = 0"
        " AND r.host = (SELECT server_name FROM tenants t WHERE t.tenant_id = o.tenant_id))"
        " AND o.id > ? ORDER BY o.id LIMIT ?", (tenant_id, destination, after, limit)).fetchall()
    out = []
    for r in rows:
        raw = _raw(r[3], r[5])
        room_id = r[2] or str(json.loads(raw).get("room_id", ""))
        out.append(Queued(r[0], r[1], room_id, raw, r[4]))
    return out


def queue_depths_txn(conn: Conn) -> list[tuple[int, str, int]]:
    """(tenant_id, destination, queued events) for every non-empty queue."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT tenant_id, destination, COUNT(*) FROM outbox GROUP BY tenant_id, destination")]


def outbox_destinations_txn(conn: Conn) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT tenant_id, destination FROM outbox")]


def outbox_done_txn(conn: Conn, tenant_id: int, ids: list[int]) -> None:
    """Drop these destination rows (settled); an event whose last row this was goes too.

    Ids already gone (a record that ran twice) change nothing: only rows
    actually deleted count down their event's ``pending``.
    """
    settled: Counter[int] = Counter()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        settled.update(r[0] for r in conn.execute(
            f"DELETE FROM outbox WHERE {_tenant_col(conn)} = ? AND id IN ({_marks(len(chunk))})"
            " RETURNING event", (tenant_id, *chunk)).fetchall())
    by_count: defaultdict[int, list[int]] = defaultdict(list)
    for event, n in settled.items():
        by_count[n].append(event)
    for n, events in by_count.items():
        for start in range(0, len(events), _CHUNK):
            chunk = events[start:start + _CHUNK]
            conn.execute(f"UPDATE outbox_events SET pending = pending - ? WHERE tenant_id = ?"
                         f" AND id IN ({_marks(len(chunk))})", (n, tenant_id, *chunk))
    events = list(settled)
    for start in range(0, len(events), _CHUNK):
        chunk = events[start:start + _CHUNK]
        conn.execute(f"DELETE FROM outbox_events WHERE tenant_id = ? AND pending <= 0"
                     f" AND id IN ({_marks(len(chunk))})", (tenant_id, *chunk))


def _tenant_col(conn: Conn) -> str:
    # SQLite: the unary + keeps its planner on the primary key (a tenant's
    # destination index would scan the whole queue); PostgreSQL plans by statistics.
    return "+tenant_id" if conn.dialect == "sqlite" else "tenant_id"


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _ensure_peer(conn: Conn, tenant_id: int, server_name: str) -> None:
    conn.execute("INSERT INTO peers (tenant_id, server_name) VALUES (?, ?)"
                 " ON CONFLICT (tenant_id, server_name) DO NOTHING",
                 (tenant_id, server_name))


def count_txn(conn: Conn, tenant_id: int, server_name: str, now: int, *,
              sent: int = 0, received: int = 0) -> None:
    conn.execute(
        "INSERT INTO peer_counts (tenant_id, server_name, hour, sent, received)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, server_name, hour) DO UPDATE SET"
        " sent = peer_counts.sent + excluded.sent,"
        " received = peer_counts.received + excluded.received",
        (tenant_id, server_name, now // HOUR_MS, sent, received))


def peer_ok_txn(conn: Conn, tenant_id: int, server_name: str, now: int) -> None:
    """The peer answered or contacted us: clear its error and backoff."""
    _ensure_peer(conn, tenant_id, server_name)
    conn.execute("UPDATE peers SET last_seen = ?, last_error = NULL, failures = 0,"
                 " next_retry_at = NULL WHERE tenant_id = ? AND server_name = ?",
                 (now, tenant_id, server_name))


def peer_failed_txn(conn: Conn, tenant_id: int, server_name: str, now: int,
                    error: str, failures: int, next_retry_at: int) -> None:
    """A send to the peer failed: its error, and the backoff read back at start
    (:func:`retry_state_txn`)."""
    _ensure_peer(conn, tenant_id, server_name)
    conn.execute("UPDATE peers SET last_error = ?, last_error_at = ?, failures = ?,"
                 " next_retry_at = ? WHERE tenant_id = ? AND server_name = ?",
                 (error[:500], now, failures, next_retry_at, tenant_id, server_name))


def retry_state_txn(conn: Conn, tenant_id: int, server_name: str) -> RetryState:
    """The backoff toward the peer as :func:`peer_failed_txn` left it (none: no row)."""
    row = conn.execute("SELECT failures, next_retry_at FROM peers WHERE tenant_id = ?"
                       " AND server_name = ?", (tenant_id, server_name)).fetchone()
    if row is None:
        return RetryState()
    return RetryState(int(row[0] or 0), None if row[1] is None else int(row[1]))


def peer_state_txn(conn: Conn, tenant_id: int,
                   server_name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM peers WHERE tenant_id = ? AND server_name = ?",
                       (tenant_id, server_name)).fetchone()
    return None if row is None else dict(row)


def peers_view_txn(conn: Conn, tenant: Tenant, now: int) -> list[dict[str, Any]]:
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
        depth, oldest = conn.execute("SELECT COUNT(*), MIN(event) FROM outbox WHERE tenant_id = ?"
                                     " AND destination = ?", (tenant.tenant_id, name)).fetchone()
        oldest_at = None if oldest is None else conn.execute(
            "SELECT created_at FROM outbox_events WHERE tenant_id = ? AND id = ?",
            (tenant.tenant_id, oldest)).fetchone()[0]
        descriptor = json.loads(peer["descriptor"]) if peer.get("descriptor") else {}
        out.append({
            "server_name": name,
            "last_seen": peer.get("last_seen"),
            "last_error": peer.get("last_error"),
            "events_sent_24h": counts[0],
            "events_received_24h": counts[1],
            "queue_depth": depth,
            "oldest_queued_at": oldest_at,
            "next_retry_at": peer.get("next_retry_at"),
            "failures": peer.get("failures", 0),
            "protocol_versions": descriptor.get("protocol_versions"),
            "key_id": descriptor.get("key_id"),
        })
    return out


def enqueue_txn(conn: Conn, tenant_id: int, destinations: list[str],
                payload: dict[str, Any], now: int) -> None:
    """Queue one event for each of ``destinations``: its canonical JSON stored once, a
    small row per destination (the commit hook wakes the sender for them)."""
    if not destinations:
        return
    event = conn.execute(
        "INSERT INTO outbox_events (tenant_id, event_id, room_id, payload, created_at, canonical,"
        " pending) VALUES (?, ?, ?, ?, ?, 1, ?) RETURNING id",
        (tenant_id, payload["event_id"], payload.get("room_id"), encode_canonical_json(payload),
         now, len(destinations))).fetchone()[0]
    conn.executemany("INSERT INTO outbox (tenant_id, destination, event) VALUES (?, ?, ?)",
                     [(tenant_id, destination, event) for destination in destinations])
    conn.touched.outbox(tenant_id, destinations)  # the commit wakes the sender for them
