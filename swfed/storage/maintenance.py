"""The database file as an admin handles it: check, restore, schema level.

Used by ``swfed admin db check``, ``swfed admin db status`` and ``swfed admin
restore`` (swfed.cli). SQLite only: these read the file itself (PostgreSQL
has its own tools, docs/admin.md).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from swfed.storage.files import SUFFIXES
from swfed.storage.migrations import MIGRATIONS, schema_version


def _open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def integrity_problems(path: Path) -> list[str]:
    """One line per problem SQLite finds in the file (empty: it is sound).

    ``PRAGMA integrity_check`` (pages, indexes, constraints) and
    ``PRAGMA foreign_key_check``; a file that is not a database is one problem.
    """
    try:
        conn = _open_readonly(path)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            problems = [] if rows == ["ok"] else rows
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
                problems.append(f"{table} row {rowid}: no matching row in {parent}")
            return problems
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [f"{path}: {exc}"]


def file_schema_version(path: Path) -> int:
    """The migration level a database file is at; raises sqlite3.DatabaseError."""
    conn = _open_readonly(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it a database?
        return schema_version(conn)  # type: ignore[arg-type]
    finally:
        conn.close()


def latest_version() -> int:
    return MIGRATIONS[-1][0]


def pending_migrations(version: int) -> list[int]:
    return [v for v, _ in MIGRATIONS if v > version]


def restore_file(backup: Path, db_file: Path) -> None:
    """Make ``db_file`` a copy of ``backup``, all at once.

    Copied with SQLite's backup API to a temporary file beside ``db_file``
    (0600 under the process's umask), synced, then renamed over it; the old
    file's ``-wal`` and ``-shm`` go first, so nothing of the old database is
    replayed into the new one. The caller holds the data directory's lock.
    """
    tmp = db_file.with_name(db_file.name + ".restoring")
    tmp.unlink(missing_ok=True)
    src = _open_readonly(backup)
    try:
        dst = sqlite3.connect(str(tmp))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for suffix in SUFFIXES[1:]:
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db_file)
    fd = os.open(db_file.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_tree(source: Path, target: Path) -> int:
    """Copy the files under ``source`` into ``target`` (made 0700), keeping files there.

    For the content-addressed media files a backup carries beside the
    database: a file already present is the same bytes, so it stays; new ones
    are created under the process's umask (0600). Returns how many were copied;
    0 when ``source`` is no directory.
    """
    if not source.is_dir():
        return 0
    copied = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        dest = target / path.relative_to(source)
        if dest.exists():
            continue
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".restoring")
        shutil.copyfile(path, tmp)  # not copy2: the mode comes from our umask
        os.replace(tmp, dest)
        copied += 1
    return copied
