"""Full-text search over message bodies (SQLite FTS5), limited to rooms one has joined."""

from __future__ import annotations

import re
from typing import Any

from swfed.core.errors import BadRequest
from swfed.storage.conn import Conn
from swfed.storage.events import VISIBLE, event_json
from swfed.storage.tenants import Tenant

_TOKEN_RE = re.compile(r"\w+\*?", re.UNICODE)


def fts_query(q: str) -> str:
    """Turn what a user typed into a safe FTS5 query: all words must match.

    Every word becomes a quoted phrase, so FTS5 operators in user input are
    just text; a trailing ``*`` keeps prefix search. Raises SW_BAD_QUERY.
    """
    words = _TOKEN_RE.findall(q)
    if not words:
        raise BadRequest("q: give at least one word to search for", code="SW_BAD_QUERY")
    parts = []
    for w in words[:20]:
        star = w.endswith("*")
        parts.append('"' + w.rstrip("*") + '"' + ("*" if star else ""))
    return " ".join(parts)


def index_bodies_txn(conn: Conn, bodies: list[tuple[int, str]]) -> None:
    """Make messages searchable: (the event's rowid, its body) each."""
    conn.executemany("INSERT INTO events_fts (rowid, body) VALUES (?, ?)", bodies)


def search_txn(conn: Conn, tenant: Tenant, viewer: str, q: str,
               limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT e.* FROM events_fts f JOIN events e ON e.rowid_ = f.rowid"
        " JOIN members m ON m.tenant_id = e.tenant_id AND m.room_id = e.room_id"
        " AND m.member = ? AND m.membership = 'join'"
        f" WHERE events_fts MATCH ? AND e.tenant_id = ? AND {VISIBLE} ORDER BY f.rank LIMIT ?",
        (viewer, fts_query(q), tenant.tenant_id, viewer, limit)).fetchall()
    return [event_json(r) for r in rows]


def unindex_body_txn(conn: Conn, rowid: int) -> None:
    """The event's body is no longer findable (deleted, or replaced by an edit)."""
    conn.execute("DELETE FROM events_fts WHERE rowid = ?", (rowid,))
