"""Copy a SQLite database into an empty PostgreSQL one (``swfed admin port-db``).

Every table of the schema is copied row by row in one PostgreSQL
transaction, ids included (identity sequences are moved past the highest id,
and past SQLite's AUTOINCREMENT high-water marks, so no id is ever reused);
the search index is rebuilt from SQLite's FTS5 table. Then the counts of
every table and a digest of the events are compared on both sides before
the COMMIT: a copy that differs is rolled back. The target must be empty (no
row in any of swfed's tables): nothing is ever merged.
"""

from __future__ import annotations

import hashlib
from typing import Any

from swfed.storage.conn import Conn
from swfed.storage.search import index_bodies_txn

#: Tables in an order that satisfies their foreign keys.
TABLES = ("tenants", "users", "tokens", "rooms", "members", "events", "invites",
          "notifications", "signing_keys", "peers", "peer_keys", "outbox_events", "outbox",
          "peer_counts", "fed_rejected", "sw_audit", "health", "passwords", "login_sessions",
          "auth_version")
#: Identity columns on PostgreSQL (migrations.py: where SQLite assigns rowids).
IDENTITY = {"tenants": "tenant_id", "events": "rowid_", "outbox_events": "id",
            "outbox": "id", "fed_rejected": "id", "sw_audit": "id"}
_BATCH = 1000


class PortRefused(Exception):
    """The target is not empty, or the copy did not come out equal."""


def counts_txn(conn: Conn) -> dict[str, int]:
    return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}


def events_digest_txn(conn: Conn) -> str:
    """SHA-256 over every event row that matters, in a fixed order."""
    h = hashlib.sha256()
    for row in conn.execute(
            "SELECT tenant_id, room_id, event_id, seq, pos, type, sender, origin, origin_ts,"
            " content, signed, status, applied FROM events ORDER BY tenant_id, pos"):
        h.update(repr(tuple(row)).encode())
        h.update(b"\n")
    return h.hexdigest()


def _columns(source: Conn, table: str) -> list[str]:
    return [r[1] for r in source.execute(f"PRAGMA table_info({table})")]


def _row(row: Any, as_bytes: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in as_bytes:
        if isinstance(values[i], str):
            values[i] = values[i].encode()
    return tuple(values)


def copy_txn(source: Conn, target: Conn) -> dict[str, Any]:
    """Copy ``source`` (SQLite, read in one transaction) into ``target`` (PostgreSQL,
    inside the caller's transaction). Raises PortRefused; returns counts and digest."""
    existing = counts_txn(target)
    # migrate_pg seeded auth_version's one row: it is replaced by the source's
    seeded = {"auth_version"}
    busy = {t: n for t, n in existing.items() if n and t not in seeded}
    if busy:
        raise PortRefused("the target database is not empty (" + ", ".join(
            f"{t}: {n} rows" for t, n in sorted(busy.items())) + "): port into a new, empty "
            "database (createdb)")
    target.execute("DELETE FROM auth_version")
    binary = {(str(r[0]), str(r[1])) for r in target.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND data_type = 'bytea'")}
    for table in TABLES:
        cols = _columns(source, table)
        marks = ", ".join("?" * len(cols))
        insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"
        # a BLOB column may hold TEXT in SQLite (outbox rows queued before migration 8)
        as_bytes = [i for i, c in enumerate(cols) if (table, c) in binary]
        cur = source.execute(f"SELECT {', '.join(cols)} FROM {table}")
        while True:
            rows = cur.fetchmany(_BATCH)
            if not rows:
                break
            target.executemany(insert, [_row(r, as_bytes) for r in rows])
    high = {str(r[0]): int(r[1]) for r in source.execute("SELECT name, seq FROM sqlite_sequence")}
    for table, col in IDENTITY.items():
        top = max(high.get(table, 0), int(target.execute(
            f"SELECT COALESCE(MAX({col}), 0) FROM {table}").fetchone()[0]))
        if top > 0:
            target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), ?)",
                           (top,))
    cur = source.execute("SELECT rowid, body FROM events_fts")
    while True:
        rows = cur.fetchmany(_BATCH)
        if not rows:
            break
        index_bodies_txn(target, [(int(r[0]), str(r[1])) for r in rows])
    counts, copied = counts_txn(source), counts_txn(target)
    fts = int(source.execute("SELECT COUNT(*) FROM events_fts").fetchone()[0])
    fts_copied = int(target.execute("SELECT COUNT(*) FROM events_fts").fetchone()[0])
    digest, digest_copied = events_digest_txn(source), events_digest_txn(target)
    if counts != copied or fts != fts_copied or digest != digest_copied:
        raise PortRefused(f"the copy differs from the source (counts {counts} vs {copied}, "
                          f"search {fts} vs {fts_copied}, events digest {digest} vs "
                          f"{digest_copied}): nothing was kept")
    return {"tables": counts, "search_rows": fts, "events_digest": digest}


def port(source: Conn, target: Conn) -> dict[str, Any]:
    """:func:`copy_txn` in one transaction on each side: the source read as one
    snapshot (even with a server writing it), the target committed only when
    the copy came out equal. Raises PortRefused."""
    source.execute("BEGIN")
    try:
        target.execute("BEGIN")
        try:
            summary = copy_txn(source, target)
        except BaseException:
            target.execute("ROLLBACK")
            raise
        target.execute("COMMIT")
    finally:
        source.execute("COMMIT")
    return summary
