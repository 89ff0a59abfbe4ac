"""The SQLite engine on a real file: group commit, failure isolation, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from swfed.storage.db import open_direct
from swfed.storage.migrations import MIGRATIONS, migrate, schema_version
from tests import pg


def insert(conn: sqlite3.Connection, name: str) -> int:
    conn.execute("INSERT INTO tenants (server_name, created_at) VALUES (?, 0)", (name,))
    return int(conn.execute("SELECT COUNT(*) FROM tenants").fetchone()[0])


def fail(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("INSERT INTO tenants (server_name, created_at) VALUES (?, 0)", (name,))
    raise ValueError("this write changes its mind")


async def test_group_commit_and_isolation(tmp_path: Path) -> None:
    db = pg.engine_database(tmp_path / "db.sqlite3", read_connections=2)
    await db.start()
    try:
        results: dict[str, object] = {}

        async def one(i: int) -> None:
            try:
                results[f"t{i}"] = await db.write(fail if i % 10 == 3 else insert, f"t{i}")
            except ValueError as exc:
                results[f"t{i}"] = exc

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        assert db.writes == 100
        # many writes share one commit (the point of group commit)
        assert db.commits < 100
        names = await db.read(lambda c: {r[0] for r in c.execute(
            "SELECT server_name FROM tenants")})
        failed = {f"t{i}" for i in range(100) if i % 10 == 3}
        assert names == {f"t{i}" for i in range(100)} - failed
        assert all(isinstance(results[n], ValueError) for n in failed)
    finally:
        await db.close()


async def test_cancelled_caller_still_commits(tmp_path: Path) -> None:
    db = pg.engine_database(tmp_path / "db.sqlite3")
    await db.start()
    try:
        with trio.move_on_after(0):
            await db.write(insert, "kept")
        names = await db.read(lambda c: [r[0] for r in c.execute(
            "SELECT server_name FROM tenants")])
        assert names == ["kept"]
    finally:
        await db.close()


@pytest.mark.sqlite_only("PRAGMA user_version; tests/storage/test_pg.py has PostgreSQL's")
def test_migrations_are_idempotent_and_refuse_downgrade(tmp_path: Path) -> None:
    conn = open_direct(tmp_path / "db.sqlite3")
    assert schema_version(conn) == MIGRATIONS[-1][0]
    assert migrate(conn) == MIGRATIONS[-1][0]
    conn.execute(f"PRAGMA user_version = {MIGRATIONS[-1][0] + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn)


@pytest.mark.sqlite_only("migrates a SQLite file of version 3")
def test_a_version_3_database_keeps_its_data_through_migration_4(tmp_path: Path) -> None:
    """Rooms that converge rebuild events, invites and notifications: nothing is lost."""
    import sqlite3

    from swfed.storage import migrations

    conn = sqlite3.connect(str(tmp_path / "db.sqlite3"), isolation_level=None)
    for version, script in migrations.MIGRATIONS[:3]:
        for statement in migrations._statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO tenants (tenant_id, server_name, created_at) VALUES (1, 'a', 0)")
    conn.execute("INSERT INTO rooms (tenant_id, room_id, name, type, federate, host, creator,"
                 " created_at) VALUES (1, '!r:b', 'r', 'standard', 1, 'b', '@c:b', 0)")
    for i, seq in enumerate((1, 2**40 + 7)):  # one ordered, one of ours still pending
        conn.execute("INSERT INTO events (tenant_id, pos, room_id, event_id, seq, type, sender,"
                     " origin, origin_ts, content, received_at) VALUES (1, ?, '!r:b', ?, ?,"
                     " 'message', '@u:a', 'a', 0, '{\"body\": \"x\"}', 0)", (i + 1, f"e{i}", seq))
        conn.execute("INSERT INTO events_fts (rowid, body) VALUES (last_insert_rowid(), 'x')")
    conn.execute("INSERT INTO invites (invite_id, tenant_id, room_id, room_name, room_type, host,"
                 " invitee, inviter, state, created_at) VALUES ('i', 1, '!r:b', 'r', 'standard',"
                 " 'b', '@u:a', '@c:b', 'pending', 0)")
    conn.execute("INSERT INTO notifications (notification_id, tenant_id, local_id, pos, type,"
                 " room_id, invite_id, sender, created_at) VALUES ('n', 1, 'u', 3, 'invite',"
                 " '!r:b', 'i', '@c:b', 0)")
    migrate(conn)
    rows = conn.execute("SELECT event_id, status, applied FROM events ORDER BY pos").fetchall()
    assert rows == [("e0", "sent", 1), ("e1", "pending", 1)]
    assert conn.execute("SELECT COUNT(*) FROM events_fts WHERE events_fts MATCH 'x'"
                        ).fetchone()[0] == 2
    assert conn.execute("SELECT tenant_id, state FROM invites").fetchall() == [(1, "pending")]
    assert conn.execute("SELECT notification_id FROM notifications").fetchall() == [("n",)]
    assert conn.execute("SELECT synced_seq FROM rooms").fetchall() == [(0,)]
