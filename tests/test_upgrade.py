"""Databases written by every schema level main has had upgrade to head, data intact.

tests/fixtures/upgrade/ holds one small database per level, each written by
the code of that level (scripts/make-upgrade-fixtures runs the old commits;
manifest.json says what each holds). Each is started under today's swfed:
it is snapshotted first (``swfed.sqlite3.schema-N.bak``), migrated to
whatever head is, and then its users sign in, its history reads as written,
the invite it queued for b.test is still queued, and its schema is the one
a fresh database gets. A database newer than the code is refused with one
line naming both.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from swfed.storage.migrations import MIGRATIONS
from tests.conftest import bearer
from tests.harness import ServerProcess, running

pytestmark = pytest.mark.sqlite_only("the fixtures are SQLite files older releases wrote")

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
MANIFEST: dict[str, dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())
HEAD = MIGRATIONS[-1][0]
PASSWORD = "correct horse battery"


#: Databases whose data upgrade but whose schema does not end where a fresh one
#: starts: known bugs in the migration history, for a repair migration to fix.
SCHEMA_DRIFT = {
    "4": "migration 4 was edited after 23fc472 ran it: events keep UNIQUE (tenant_id, "
         "event_id) where a fresh database has UNIQUE (tenant_id, room_id, event_id)",
    "10a": "main had 1..8 and 10 before migration 9 was merged (ab4c0b3): at user_version 10, "
           "9 never runs (events_by_room not UNIQUE, no fed_rejected_by_event)",
}


def server_from(fixture: dict[str, Any], root: Path) -> ServerProcess:
    server = ServerProcess(root, fixture["server_name"],
                           extra={"federation.resolve": {"b.test": "127.0.0.1:9"}})
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "swfed.sqlite3").write_bytes(gzip.decompress((FIXTURES / fixture["file"])
                                                         .read_bytes()))
    (data / "swfed.sqlite3").chmod(0o600)
    return server


def schema(path: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return {(name, " ".join(sql.split())) for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def fresh_schema(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("fresh"), "a.test")
    server.cli("admin", "tenant", "list")  # creates and migrates the database
    return schema(server.root / "data" / "swfed.sqlite3")


def test_every_level_has_a_fixture() -> None:
    levels = {f["level"] for f in MANIFEST.values()}
    # level 1 was never a head (the first commit had 1 and 2); nor 9 (10 came first)
    assert levels >= set(range(2, 9)) | {10}
    for fixture in MANIFEST.values():
        assert (FIXTURES / fixture["file"]).stat().st_size < 20_000


@pytest.mark.parametrize("name", sorted(MANIFEST, key=lambda n: (MANIFEST[n]["level"], n)))
async def test_upgrade_to_head(name: str, tmp_path: Path,
                               fresh_schema: set[tuple[str, str]]) -> None:
    fixture = MANIFEST[name]
    level = fixture["level"]
    server = server_from(fixture, tmp_path)
    status = json.loads(server.cli("admin", "db", "status", "--json").stdout)
    assert status["schema"] == level
    assert status["pending"] == list(range(level + 1, HEAD + 1))
    db = tmp_path / "data" / "swfed.sqlite3"
    with running(server):
        snapshot = db.with_name(f"swfed.sqlite3.schema-{level}.bak")
        if level < HEAD:
            assert snapshot.exists() and snapshot.stat().st_mode & 0o777 == 0o600
            assert [x["schema"] for x in server.logs("storage.snapshot")] == [level]
        else:
            assert not snapshot.exists()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            alice, carol = fixture["tokens"]["alice"], fixture["tokens"]["carol"]
            if fixture["passwords"]:
                r = await c.post("/v1/login", json={"local_id": "carol", "password": PASSWORD})
                assert r.status_code == 200, r.text
                carol = r.json()["token"]
            r = await c.get("/v1/me", headers=bearer(alice))  # tokens made then still work
            assert r.status_code == 200, r.text
            for token in (alice, carol):
                r = await c.get(f"/v1/rooms/{fixture['room_id']}/messages?limit=50",
                                headers=bearer(token))
                assert r.status_code == 200, r.text
                messages = [(e["event_id"], e["content"]["body"]) for e in r.json()["data"]
                            if e["type"] == "message"]
                assert sorted(messages) == sorted(zip(fixture["event_ids"], fixture["bodies"],
                                                      strict=True))
            if fixture["queued"]:
                r = await c.get("/v1/admin/federation/peers", headers=bearer(alice))
                assert r.status_code == 200, r.text
                rows = {p["server_name"]: p for p in r.json()["data"]}
                assert rows["b.test"]["queue_depth"] >= 1
        # the new events go on from the old ones
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            r = await c.post(f"/v1/rooms/{fixture['room_id']}/messages",
                             json={"body": "after the upgrade"}, headers=bearer(alice))
            assert r.status_code == 201, r.text
    status = json.loads(server.cli("admin", "db", "status", "--json").stdout)
    assert status["schema"] == HEAD and status["pending"] == []
    assert server.cli("admin", "db", "check").returncode == 0
    if name in SCHEMA_DRIFT:
        assert schema(db) != fresh_schema, f"{name} now upgrades right: drop it from SCHEMA_DRIFT"
        pytest.xfail(SCHEMA_DRIFT[name])
    assert schema(db) == fresh_schema


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    fixture = MANIFEST[max(MANIFEST, key=lambda n: MANIFEST[n]["level"])]
    server = server_from(fixture, tmp_path)
    db = tmp_path / "data" / "swfed.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {HEAD + 5}")
    conn.commit()
    conn.close()
    for args in ((), ("admin", "tenant", "list")):
        result = server.cli(*args, check=False)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert f"schema {HEAD + 5}" in line and f"(schema {HEAD})" in line
        assert "[server] data_dir" in line
    status = server.cli("admin", "db", "status", check=False)
    assert status.returncode == 2 and "newer than this swfed" in status.stdout
