"""The SQLite engine on a real file: group commit, failure isolation, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from swfed.storage.db import Database, open_direct
from swfed.storage.migrations import MIGRATIONS, migrate, schema_version


def insert(conn: sqlite3.Connection, name: str) -> int:
    conn.execute("INSERT INTO tenants (server_name, created_at) VALUES (?, 0)", (name,))
    return int(conn.execute("SELECT COUNT(*) FROM tenants").fetchone()[0])


def fail(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("INSERT INTO tenants (server_name, created_at) VALUES (?, 0)", (name,))
    raise ValueError("this write changes its mind")


async def test_group_commit_and_isolation(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3", read_connections=2)
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
    db = Database(tmp_path / "db.sqlite3")
    await db.start()
    try:
        with trio.move_on_after(0):
            await db.write(insert, "kept")
        names = await db.read(lambda c: [r[0] for r in c.execute(
            "SELECT server_name FROM tenants")])
        assert names == ["kept"]
    finally:
        await db.close()


def test_migrations_are_idempotent_and_refuse_downgrade(tmp_path: Path) -> None:
    conn = open_direct(tmp_path / "db.sqlite3")
    assert schema_version(conn) == MIGRATIONS[-1][0]
    assert migrate(conn) == MIGRATIONS[-1][0]
    conn.execute(f"PRAGMA user_version = {MIGRATIONS[-1][0] + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn)
