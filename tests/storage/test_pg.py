"""The PostgreSQL engine beside SQLite: one schema, one search, named trouble.

A real throwaway cluster (tests/pg.py) and a real SQLite file side by side:
both engines end with the same logical schema, the same search corpus finds
the same messages on both (prefixes and accents included), migrations run
once under an advisory lock and refuse a newer database, and a PostgreSQL
server that goes away makes writes fail with StorageUnavailable until it is
back, nothing acknowledged lost.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from swfed.core.errors import StorageUnavailable
from swfed.core.rooms import Room
from swfed.storage import members as members_db
from swfed.storage import rooms as rooms_db
from swfed.storage.context import Ctx
from swfed.storage.db import health_write_txn, open_direct, run_in_transaction
from swfed.storage.migrations import MIGRATIONS, migrate_pg, pg_schema_version
from swfed.storage.room_writes import receive_batch_txn
from swfed.storage.search import search_txn
from swfed.storage.tenants import Tenant, create_tenant_txn, create_user_txn
from tests import pg

try:
    import psycopg  # noqa: F401

    from swfed.storage import pg as pg_engine
    HAVE_PG = bool(shutil.which("runuser")) and pg._bindir() is not None
except (ImportError, RuntimeError):
    HAVE_PG = False

pytestmark = pytest.mark.skipif(not HAVE_PG, reason="PostgreSQL (initdb) or psycopg missing")

ROOM = "!AbcdefghijklmnopqR:a.test"
NOW = 1_700_000_000_000
LATEST = MIGRATIONS[-1][0]


def test_placeholders_are_translated_outside_literals() -> None:
    assert pg_engine.translate("SELECT ? WHERE a LIKE 'x?%' AND b = ?") == (
        "SELECT %s WHERE a LIKE 'x?%%' AND b = %s")
    assert pg_engine.translate("SELECT '' || ? || 'it''s ?'") == "SELECT '' || %s || 'it''s ?'"
    assert pg_engine.translate('SELECT "a?" FROM t WHERE x % 2 = ?') == (
        'SELECT "a?" FROM t WHERE x %% 2 = %s')


# -- one logical schema -------------------------------------------------------

#: Engine-specific: SQLite's FTS5 table and its shadow tables, PostgreSQL's
#: tsvector table; each engine's version bookkeeping.
_ENGINE_TABLES = {"events_fts", "sqlite_sequence", "swfed_schema"}


def _sqlite_schema(path: Path) -> dict[str, Any]:
    conn = open_direct(path)
    out: dict[str, Any] = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        if table in _ENGINE_TABLES or table.startswith("events_fts_"):
            continue
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        columns = [(r[1], bool(r[3]) or bool(r[5])) for r in info]
        pk = tuple(r[1] for r in sorted(info, key=lambda r: r[5]) if r[5])
        indexes = set()
        for idx in conn.execute(f"PRAGMA index_list({table})").fetchall():
            cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({idx[1]})"))
            if idx[3] == "pk":
                continue
            indexes.add((cols, bool(idx[2])))
        out[table] = {"columns": columns, "pk": pk, "indexes": indexes}
    conn.close()
    return out


def _pg_schema(url: str) -> dict[str, Any]:
    conn = pg_engine.connect(url)
    out: dict[str, Any] = {}
    tables = [r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_type = 'BASE TABLE'")]
    for table in tables:
        if table in _ENGINE_TABLES:
            continue
        columns = [(r[0], r[1] == "NO") for r in conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position",
            (table,))]
        pk: tuple[str, ...] = ()
        indexes = set()
        for r in conn.execute(
                "SELECT i.indisprimary, i.indisunique, array_agg(a.attname ORDER BY k.n)"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
                " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
                " WHERE c.relname = ? GROUP BY i.indexrelid, i.indisprimary, i.indisunique",
                (table,)):
            if r[0]:
                pk = tuple(r[2])
            else:
                indexes.add((tuple(r[2]), bool(r[1])))
        out[table] = {"columns": columns, "pk": pk, "indexes": indexes}
    conn.close()
    return out


def test_both_engines_end_with_the_same_logical_schema(tmp_path: Path) -> None:
    sqlite = _sqlite_schema(tmp_path / "db.sqlite3")
    postgres = _pg_schema(pg.cluster().new_database())
    assert sorted(sqlite) == sorted(postgres)
    for table in sqlite:
        assert sqlite[table] == postgres[table], table


def test_migrations_run_once_under_a_lock_and_refuse_a_newer_database() -> None:
    url = pg.cluster().empty_database()
    versions: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        conn = pg_engine.connect(url)
        try:
            versions.append(migrate_pg(conn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.raw.close()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and versions == [LATEST] * 4
    conn = pg_engine.connect(url)
    try:
        assert conn.execute("SELECT COUNT(*) FROM auth_version").fetchone()[0] == 1
        conn.execute("UPDATE swfed_schema SET version = ?", (LATEST + 5,))
        with pytest.raises(RuntimeError) as info:
            migrate_pg(conn)
        assert f"version {LATEST + 5}" in str(info.value) and f"({LATEST})" in str(info.value)
        assert pg_schema_version(conn) == LATEST + 5
    finally:
        conn.raw.close()


def test_the_cli_moves_auth_version_on_postgresql(tmp_path: Path) -> None:
    conn = pg_engine.open_direct(pg.cluster().new_database(), tmp_path / "swfed.sqlite3")
    try:
        tenant = run_in_transaction(conn, create_tenant_txn, "a.test", NOW)
        token = run_in_transaction(conn, create_user_txn, tenant, "alice", "Alice", False, NOW)
        before = conn.execute("SELECT version FROM auth_version").fetchone()[0]
        from swfed.storage.passwords import revoke_token_txn

        assert run_in_transaction(conn, revoke_token_txn, tenant, token)
        assert conn.execute("SELECT version FROM auth_version").fetchone()[0] == before + 1
        # and the running server hears of it through the stamp in data_dir
        assert (tmp_path / "sessions.changed").exists()
    finally:
        conn.close()


# -- one search ---------------------------------------------------------------

CORPUS = [
    "the backup finished at noon",
    "Backups are kept for a week",
    "back in five minutes",
    "café au lait, s'il vous plaît",
    "Le CAFÉ est fermé",
    "naïve résumé of the backlog",
    "nothing to see here",
    "deploy tonight after the backup",
]
#: query → the bodies it finds (all words must match; the last one is a prefix)
EXPECTED = {
    "back": {0, 1, 2, 5, 7},
    "backup": {0, 1, 7},
    "backup*": {0, 1, 7},
    "back*": {0, 1, 2, 5, 7},
    "cafe": {3, 4},
    "CAFÉ": {3, 4},
    "cafe lait": {3},
    "resume": {5},
    "résumé naive": {5},  # accents folded on both sides: "naïve"
    "naive résumé": {5},
    "resum naive": set(),  # only the last word is a prefix
    "the backup": {0, 7},
    "back minutes": {2},
    "backu minutes": set(),  # a word before the last is whole
    "backu* minutes": set(),
    "minutes back": {2},
    "minute back": set(),
    "nothing": {6},
    "zzz": set(),
    "\"back\" OR NEAR(x)": set(),  # operators are just words: back, or, near, x
}


def _room_with_corpus(conn: Any) -> Tenant:
    conn.execute("BEGIN")
    tenant = create_tenant_txn(conn, "b.test", NOW)
    create_user_txn(conn, tenant, "bob", "Bob", False, NOW)
    rooms_db.insert_room_txn(conn, tenant, Room(ROOM, "r", "group", True, "a.test",
                                                "@alice:a.test", NOW, True))
    members_db.set_membership_txn(conn, tenant, ROOM, "@bob:b.test", "join", NOW)
    members_db.set_membership_txn(conn, tenant, ROOM, "@alice:a.test", "join", NOW)
    events = [{"event_id": f"00000000-0000-4000-8000-{n:012d}", "room_id": ROOM,
               "type": "message", "sender": "@alice:a.test", "origin": "a.test",
               "origin_ts": NOW + n, "content": {"body": body},
               "signatures": {"a.test": {"ed25519:k1": "sig"}}, "unsigned": {"seq": n + 1}}
              for n, body in enumerate(CORPUS)]
    receive_batch_txn(conn, Ctx(tenant, NOW), "a.test", events, [], {})
    conn.execute("COMMIT")
    return tenant


def _found(conn: Any, tenant: Tenant, q: str) -> set[int]:
    return {CORPUS.index(e["content"]["body"])
            for e in search_txn(conn, tenant, "@bob:b.test", q, 50)}


def test_one_corpus_gives_the_same_results_on_both_engines(tmp_path: Path) -> None:
    lite = open_direct(tmp_path / "db.sqlite3")
    post = pg_engine.open_direct(pg.cluster().new_database(), tmp_path / "swfed.sqlite3")
    try:
        lite_tenant = _room_with_corpus(lite)
        post_tenant = _room_with_corpus(post)
        for q, expected in EXPECTED.items():
            assert _found(lite, lite_tenant, q) == expected, ("sqlite", q)
            assert _found(post, post_tenant, q) == expected, ("postgresql", q)
    finally:
        lite.close()
        post.close()


# -- trouble ------------------------------------------------------------------

def _add(conn: Any, name: str) -> None:
    create_tenant_txn(conn, name, NOW)


async def test_a_stopped_server_is_named_and_writes_resume_when_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = pg.Cluster()  # stopped and started here: not the session's cluster
    try:
        db = pg_engine.PgDatabase(own.new_database(), tmp_path / "swfed.sqlite3",
                                  read_connections=2)
        await db.start()
        caplog.set_level(logging.INFO)
        try:
            await db.write(_add, "kept.test")
            await trio.to_thread.run_sync(own.stop)
            for i in range(3):
                with pytest.raises(StorageUnavailable) as info:
                    await db.write(_add, f"lost{i}.test")
                assert info.value.reason == "unreachable"
                assert "PostgreSQL" in info.value.message
            with pytest.raises(StorageUnavailable):
                await db.read(lambda c: c.execute("SELECT 1").fetchone())
            assert db.trouble is not None and db.trouble.reason == "unreachable"
            events = [getattr(r, "event", None) for r in caplog.records]
            assert events.count("storage.unavailable") == 1
            # the /healthz probe proves nothing while down
            with pytest.raises(StorageUnavailable):
                await db.write(health_write_txn, 1)

            await trio.to_thread.run_sync(own.start)
            await db.write(_add, "after.test")  # reconnects by itself
            assert db.trouble is None
            events = [getattr(r, "event", None) for r in caplog.records]
            assert events.count("storage.recovered") == 1
            names = await db.read(lambda c: sorted(r[0] for r in c.execute(
                "SELECT server_name FROM tenants")))
            assert names == ["after.test", "kept.test"]  # what was acknowledged, only
        finally:
            await db.close()
    finally:
        own.destroy()
