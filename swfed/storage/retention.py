"""Retention: deleting what only grows, oldest first, in bounded batches (sync ``*_txn``).

Each function deletes at most ``limit`` rows older than a cutoff (ms since
the epoch, or an hour number for ``peer_counts``) and returns how many it
deleted; the housekeeping task (``swfed.housekeeping``) calls it again,
one write transaction per batch, until a batch comes back short. The
indexes of migration ``_V_RETENTION`` make each batch a range scan, so a
batch costs about the same whatever the table size.
"""

from __future__ import annotations

from swfed.storage.conn import Conn


def prune_audit_txn(conn: Conn, before_ms: int, limit: int) -> int:
    """``sw_audit`` rows created before ``before_ms``."""
    return conn.execute(
        "DELETE FROM sw_audit WHERE id IN (SELECT id FROM sw_audit WHERE created_at < ?"
        " ORDER BY created_at LIMIT ?)", (before_ms, limit)).rowcount


def prune_rejected_txn(conn: Conn, before_ms: int, limit: int) -> int:
    """``fed_rejected`` rows created before ``before_ms``."""
    return conn.execute(
        "DELETE FROM fed_rejected WHERE id IN (SELECT id FROM fed_rejected WHERE created_at < ?"
        " ORDER BY created_at LIMIT ?)", (before_ms, limit)).rowcount


def prune_peer_counts_txn(conn: Conn, before_hour: int, limit: int) -> int:
    """Hourly ``peer_counts`` rows of hours before ``before_hour``."""
    return conn.execute(
        "DELETE FROM peer_counts WHERE (tenant_id, server_name, hour) IN (SELECT tenant_id,"
        " server_name, hour FROM peer_counts WHERE hour < ? ORDER BY hour LIMIT ?)",
        (before_hour, limit)).rowcount


def prune_login_sessions_txn(conn: Conn, now_ms: int, limit: int) -> int:
    """Web sessions (``login_sessions``) that expired before ``now_ms``.

    Their token rows go with them: an expired session's token no longer signs
    anyone in, so the row is only weight.
    """
    rows = conn.execute(
        "SELECT token_hash FROM login_sessions WHERE expires_at < ? ORDER BY expires_at"
        " LIMIT ?", (now_ms, limit)).fetchall()
    hashes = [(r[0],) for r in rows]
    conn.executemany("DELETE FROM tokens WHERE token_hash = ?", hashes)
    conn.executemany("DELETE FROM login_sessions WHERE token_hash = ?", hashes)
    return len(hashes)
