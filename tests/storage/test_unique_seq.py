"""A host seq is stored once per room (migration 9), on files that already hold more.

Before migration 9 nothing kept two events of a room from sharing a host seq,
and a lying host's repair pages left thousands of them. The migration keeps,
of each (tenant, room, seq), our own users' event if one is there, else the
first stored; every other row is recorded in ``fed_rejected`` (what the admin
sees) and dropped with its search entry and notifications. After it, a second
event under a seq we hold is refused (SW_FED_SEQ_TAKEN), on every path.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from swfed.core.errors import FederationError
from swfed.core.rooms import Room
from swfed.storage import rooms as rooms_db
from swfed.storage.context import Ctx
from swfed.storage.db import connect
from swfed.storage.migrations import MIGRATIONS, migrate, schema_version
from swfed.storage.room_writes import receive_batch_txn, store_repair_txn
from swfed.storage.search import index_bodies_txn, search_txn
from swfed.storage.tenants import Tenant, create_tenant_txn, create_user_txn, tenant_by_name_txn

ROOM = "!AbcdefghijklmnopqR:evil.test"
NOW = 1_700_000_000_000


pytestmark = pytest.mark.sqlite_only("migration 9 on SQLite files")

def _at_version_8(path: Path) -> sqlite3.Connection:
    """A file as swfed left it before migration 9 (its migrations, run as they were)."""
    conn = connect(path, synchronous="FULL", busy_timeout_ms=5000)
    for number, script in MIGRATIONS[:8]:
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {number}")
    assert schema_version(conn) == 8
    return conn


def _row(conn: sqlite3.Connection, n: int, seq: int, origin: str, body: str) -> None:
    """An event row and its search entry, written as swfed 8 wrote them."""
    event_id = f"00000000-0000-4000-8000-{n:012d}"
    sender = f"@{'bob' if origin == 'b.test' else 'mallory'}:{origin}"
    cur = conn.execute(
        "INSERT INTO events (tenant_id, pos, room_id, event_id, seq, type, sender, origin,"
        " origin_ts, content, signed, received_at, status, applied)"
        " VALUES (1, ?, ?, ?, ?, 'message', ?, ?, ?, ?, '{}', ?, 'sent', 1)",
        (n, ROOM, event_id, seq, sender, origin, NOW + n, json.dumps({"body": body}), NOW))
    index_bodies_txn(conn, [(int(cur.lastrowid or 0), body)])
    if "mention" in body:
        conn.execute("INSERT INTO notifications (tenant_id, notification_id, local_id, pos, type,"
                     " room_id, event_id, sender, created_at) VALUES"
                     " (1, ?, 'bob', ?, 'mention', ?, ?, ?, ?)",
                     (f"n{n}", 1000 + n, ROOM, event_id, sender, NOW))


def _tenant(conn: sqlite3.Connection) -> Tenant:
    tenant = tenant_by_name_txn(conn, "b.test")
    assert tenant is not None
    return tenant


def _copy_with_duplicates(path: Path) -> sqlite3.Connection:
    """b.test's copy of a room evil.test hosts: seqs 1..3, with lies under 2 and 3."""
    conn = _at_version_8(path)
    tenant = create_tenant_txn(conn, "b.test", NOW)
    create_user_txn(conn, tenant, "bob", "Bob", False, NOW)
    rooms_db.insert_room_txn(conn, tenant, Room(ROOM, "r", "group", True, "evil.test",
                                                "@mallory:evil.test", NOW, True))
    rooms_db.set_synced_txn(conn, tenant, ROOM, 3)
    _row(conn, 1, 1, "evil.test", "first")
    _row(conn, 2, 2, "evil.test", "second")
    _row(conn, 3, 2, "evil.test", "junk under two, mention")  # later: dropped
    _row(conn, 4, 3, "evil.test", "junk under three")  # first, but not ours: dropped
    _row(conn, 5, 3, "b.test", "bob's own under three")  # ours: kept
    _row(conn, 6, 3, "evil.test", "more junk under three")
    conn.execute("UPDATE tenants SET stream_pos = 2000")  # past the rows' positions
    conn.commit()
    return conn


def test_migration_9_keeps_one_event_per_seq_and_records_the_rest(tmp_path: Path) -> None:
    conn = _copy_with_duplicates(tmp_path / "db.sqlite3")
    assert migrate(conn) == MIGRATIONS[-1][0]
    tenant = _tenant(conn)
    kept = [tuple(r) for r in conn.execute(
        "SELECT seq, json_extract(content, '$.body') FROM events ORDER BY seq")]
    assert kept == [(1, "first"), (2, "second"), (3, "bob's own under three")]
    dropped = [tuple(r) for r in conn.execute(
        "SELECT event_id, room_id, peer, reason, message FROM fed_rejected ORDER BY event_id")]
    assert [(e[-3:], r, p, c) for e, r, p, c, _ in dropped] == [
        ("003", ROOM, "evil.test", "SW_FED_SEQ_TAKEN"),
        ("004", ROOM, "evil.test", "SW_FED_SEQ_TAKEN"),
        ("006", ROOM, "evil.test", "SW_FED_SEQ_TAKEN")]
    assert "host seq 3" in dropped[1][4] and dropped[1][4].endswith(
        "(a host seq names one event)")
    assert [e["content"]["body"] for e in search_txn(conn, tenant, "@bob:b.test", "junk",
                                                     10)] == []
    assert conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0] == 0
    # and from now on the file itself refuses a second event under a seq
    with pytest.raises(sqlite3.IntegrityError):
        _row(conn, 7, 1, "evil.test", "again")
    conn.close()


def test_migration_9_on_a_file_without_duplicates_changes_no_row(tmp_path: Path) -> None:
    conn = _at_version_8(tmp_path / "db.sqlite3")
    create_tenant_txn(conn, "b.test", NOW)
    for n in range(1, 4):
        _row(conn, n, n, "evil.test", f"m{n}")
    conn.commit()
    before = [tuple(r) for r in conn.execute("SELECT * FROM events ORDER BY rowid_")]
    migrate(conn)
    assert [tuple(r) for r in conn.execute("SELECT * FROM events ORDER BY rowid_")] == before
    assert conn.execute("SELECT COUNT(*) FROM fed_rejected").fetchone()[0] == 0
    conn.close()


def _event(n: int, seq: int) -> dict[str, object]:
    return {"event_id": f"10000000-0000-4000-8000-{n:012d}", "room_id": ROOM,
            "type": "message", "sender": "@mallory:evil.test", "origin": "evil.test",
            "origin_ts": NOW + n, "content": {"body": f"lie {n}"},
            "signatures": {"evil.test": {"ed25519:k1": "sig"}}, "unsigned": {"seq": seq}}


def test_a_second_event_under_a_seq_is_refused_on_relay_and_repair(tmp_path: Path) -> None:
    conn = _copy_with_duplicates(tmp_path / "db.sqlite3")
    migrate(conn)
    tenant = _tenant(conn)
    ctx = Ctx(tenant, NOW)
    conn.execute("BEGIN IMMEDIATE")
    late = receive_batch_txn(conn, ctx, "evil.test", [_event(1, 2), _event(2, 4)], [], {})
    synced, taken = store_repair_txn(conn, ctx, ROOM, [_event(3, 3), _event(4, 4),
                                                       _event(5, 5)])
    conn.execute("COMMIT")
    assert [(key[-3:], exc.code) for key, _, exc in late] == [("001", "SW_FED_SEQ_TAKEN")]
    assert [(key[-3:], exc.code) for key, _, exc in taken] == [("003", "SW_FED_SEQ_TAKEN"),
                                                               ("004", "SW_FED_SEQ_TAKEN")]
    assert isinstance(late[0][2], FederationError) and synced == 5
    seqs = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
    assert seqs == [1, 2, 3, 4, 5]
    conn.close()
