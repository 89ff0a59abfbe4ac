"""Full-text search over message bodies, limited to rooms one has joined.

SQLite: an FTS5 table (unicode61, diacritics removed). PostgreSQL: a
``tsvector`` per message under a GIN index, in the ``simple`` configuration
over ``unaccent`` (no stemming, accents folded, like FTS5). Both get a query
built here from the words typed: every word must match, a word typed with a
trailing ``*`` matches as a prefix, and so does the last word always (people
type "back" and expect "backup").
"""

from __future__ import annotations

import re
from typing import Any

from swfed.core.errors import BadRequest
from swfed.storage.conn import Conn
from swfed.storage.events import VISIBLE, event_json
from swfed.storage.tenants import Tenant

_TOKEN_RE = re.compile(r"\w+\*?", re.UNICODE)
#: Words of a query that count (more are ignored).
MAX_WORDS = 20


def query_words(q: str) -> list[tuple[str, bool]]:
    """(word, as a prefix?) for each word of the query. Raises SW_BAD_QUERY."""
    words = _TOKEN_RE.findall(q)[:MAX_WORDS]
    if not words:
        raise BadRequest("q: give at least one word to search for", code="SW_BAD_QUERY")
    last = len(words) - 1
    return [(w.rstrip("*"), w.endswith("*") or i == last) for i, w in enumerate(words)]


def fts_query(q: str) -> str:
    """What a user typed as a safe FTS5 query: every word a quoted phrase (FTS5
    operators in the input are just text), prefixes marked with ``*``."""
    return " ".join('"' + w + '"' + ("*" if prefix else "") for w, prefix in query_words(q))


def tsquery_text(q: str) -> str:
    """What a user typed as PostgreSQL tsquery text: quoted lexemes (operators in
    the input are just text) joined by ``&``, prefixes marked ``:*``."""
    return " & ".join("'" + w.lower() + "'" + (":*" if prefix else "")
                      for w, prefix in query_words(q))


def index_bodies_txn(conn: Conn, bodies: list[tuple[int, str]]) -> None:
    """Make messages searchable: (the event's rowid, its body) each."""
    if conn.dialect == "sqlite":
        conn.executemany("INSERT INTO events_fts (rowid, body) VALUES (?, ?)", bodies)
    else:
        conn.executemany("INSERT INTO events_fts (rowid, tsv)"
                         " VALUES (?, to_tsvector('simple', unaccent(?)))", bodies)


def search_txn(conn: Conn, tenant: Tenant, viewer: str, q: str,
               limit: int) -> list[dict[str, Any]]:
    joined = (" JOIN members m ON m.tenant_id = e.tenant_id AND m.room_id = e.room_id"
              " AND m.member = ? AND m.membership = 'join'")
    if conn.dialect == "sqlite":
        rows = conn.execute(
            "SELECT e.* FROM events_fts f JOIN events e ON e.rowid_ = f.rowid" + joined +
            f" WHERE events_fts MATCH ? AND e.tenant_id = ? AND {VISIBLE}"
            " ORDER BY f.rank LIMIT ?",
            (viewer, fts_query(q), tenant.tenant_id, viewer, limit)).fetchall()
    else:
        tsq = tsquery_text(q)
        rows = conn.execute(
            "SELECT e.* FROM events_fts f JOIN events e ON e.rowid_ = f.rowid" + joined +
            " WHERE f.tsv @@ to_tsquery('simple', unaccent(?)) AND e.tenant_id = ?"
            f" AND {VISIBLE} ORDER BY ts_rank(f.tsv, to_tsquery('simple', unaccent(?))) DESC,"
            " e.pos LIMIT ?",
            (viewer, tsq, tenant.tenant_id, viewer, tsq, limit)).fetchall()
    return [event_json(r) for r in rows]


def unindex_body_txn(conn: Conn, rowid: int) -> None:
    """The event's body is no longer findable (deleted, or replaced by an edit)."""
    conn.execute("DELETE FROM events_fts WHERE rowid = ?", (rowid,))
