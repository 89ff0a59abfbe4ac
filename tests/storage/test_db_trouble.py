"""Storage trouble against real SQLite: which errors are named, and the writer's log.

A full database comes from ``PRAGMA max_page_count`` (the writer's test hook,
the same SQLITE_FULL a full disk gives); a read-only one from opening the
file read-only. Nothing is mocked.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from swfed.core.errors import StorageUnavailable
from swfed.storage.db import (
    Database,
    connect,
    health_write_txn,
    open_direct,
    storage_trouble,
)

pytestmark = pytest.mark.sqlite_only("SQLite's own errors and its page limit")

def grow(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
    conn.execute("INSERT INTO ballast VALUES (?)", (b"\0" * n,))


def error_of(conn: sqlite3.Connection, sql: str, *args: object) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as info:
        conn.execute(sql, args)
    return info.value


def test_real_sqlite_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    open_direct(path).close()
    ro = connect(path, readonly=True)
    trouble = storage_trouble(error_of(ro, "INSERT INTO health (id, checked_at) VALUES (1, 1)"))
    assert trouble is not None and trouble.reason == "read_only"
    assert trouble.code == "SW_STORAGE_UNAVAILABLE" and trouble.status == 503
    assert "writable" in trouble.message

    rw = connect(path)
    rw.execute("CREATE TABLE ballast (b BLOB)")
    rw.execute("PRAGMA max_page_count = 1")  # clamps to the current size
    trouble = storage_trouble(error_of(rw, "INSERT INTO ballast VALUES (?)", b"\0" * 100_000))
    assert trouble is not None and trouble.reason == "disk_full"
    assert "free disk space under data_dir" in trouble.message

    # a bug or a constraint is not storage trouble
    assert storage_trouble(error_of(rw, "SELECT * FROM no_such_table")) is None
    assert storage_trouble(ValueError("database or disk is full")) is None


async def test_writer_names_it_logs_once_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit = tmp_path / "limit"
    limit.write_text("0")
    db = Database(tmp_path / "db.sqlite3", page_limit_file=limit)
    await db.start()
    caplog.set_level(logging.INFO)
    try:
        await db.write(grow, 10)
        limit.write_text("1")
        for _ in range(5):
            with pytest.raises(StorageUnavailable) as info:
                await db.write(grow, 100_000)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert db.trouble is not None and db.trouble.reason == "disk_full"
        # many writers at once fail together, each with its own error
        errors: list[BaseException] = []

        async def one() -> None:
            try:
                await db.write(grow, 100_000)
            except StorageUnavailable as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
        assert len(errors) == 10 and len({id(e) for e in errors}) == 10
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events.count("storage.unavailable") == 1

        # a commit that stores nothing, or the /healthz probe, proves nothing
        await db.write(lambda c: c.execute("DELETE FROM ballast WHERE 0"))
        await db.write(health_write_txn, 1)
        assert db.trouble is not None

        # writes that fit and writes that don't, by turns: still one line a minute
        await db.write(lambda c: c.execute("UPDATE ballast SET b = x'00'"))
        assert db.trouble is None
        with pytest.raises(StorageUnavailable):
            await db.write(grow, 100_000)
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events.count("storage.unavailable") == 1
        assert events.count("storage.recovered") == 1

        limit.write_text("0")  # space returns
        await db.write(grow, 100_000)
        assert db.trouble is None
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events.count("storage.recovered") == 1  # one per storage.unavailable line
        count = await db.read(lambda c: c.execute("SELECT COUNT(*) FROM ballast").fetchone()[0])
        assert count == 2  # the first and the last: nothing refused was half-stored
    finally:
        await db.close()
