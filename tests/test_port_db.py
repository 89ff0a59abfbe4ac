"""swfed admin port-db: a SQLite server's data moves into an empty PostgreSQL database.

A real server on SQLite makes users, a room with messages and a search entry,
then stops; port-db copies its file into a fresh database of the test
cluster; the same server started on the copy knows the same tokens, rooms,
messages, search and signing key. A target with rows in it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests import pg
from tests.conftest import bearer
from tests.harness import ServerProcess, write_config

pytestmark = pytest.mark.sqlite_only("the source is a SQLite server (the target is PostgreSQL)")


async def test_a_sqlite_server_moves_to_postgresql(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "a")
    srv.start()
    token = srv.create_user("dora", admin=True)
    async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
        r = await c.post("/v1/rooms", json={"name": "moving"}, headers=bearer(token))
        room_id = r.json()["room_id"]
        for body in ("packing the backup", "café moved", "hello"):
            r = await c.post(f"/v1/rooms/{room_id}/messages", json={"body": body},
                             headers=bearer(token))
            assert r.status_code == 201
        before = (await c.get(f"/v1/rooms/{room_id}/messages", headers=bearer(token))).json()
        desc = (await c.get("/.well-known/scaiwave/server")).json()
        key_before = (desc["key_id"], desc["public_key"])
        assert key_before[0]
    srv.stop()

    url = pg.cluster().empty_database()
    out = srv.cli("admin", "port-db", "--to", url, "--json").stdout
    summary = json.loads(out)
    assert summary["tables"]["events"] >= 4 and summary["search_rows"] == 3
    # a second port into the same (now full) database is refused, changing nothing
    again = srv.cli("admin", "port-db", "--to", url, check=False)
    assert again.returncode == 1 and "SW_PORT_REFUSED" in again.stderr
    assert "not empty" in again.stderr

    # the same server, now on PostgreSQL
    config = tmp_path / "a" / "server.toml"
    tables = dict(srv._tables)
    tables["storage"] = {**tables["storage"], "backend": "postgresql", "url": url}
    write_config(config, tables)
    srv.start()
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
            after = (await c.get(f"/v1/rooms/{room_id}/messages", headers=bearer(token))).json()
            assert after["data"] == before["data"]
            found = (await c.get("/v1/search", params={"q": "back"},
                                 headers=bearer(token))).json()["data"]
            assert [e["content"]["body"] for e in found] == ["packing the backup"]
            found = (await c.get("/v1/search", params={"q": "cafe"},
                                 headers=bearer(token))).json()["data"]
            assert [e["content"]["body"] for e in found] == ["café moved"]
            desc = (await c.get("/.well-known/scaiwave/server")).json()
            assert (desc["key_id"], desc["public_key"]) == key_before  # same identity
            # new rows take new ids after the copied ones
            r = await c.post(f"/v1/rooms/{room_id}/messages", json={"body": "on postgres"},
                             headers=bearer(token))
            assert r.status_code == 201, r.text
            assert (await c.get("/healthz")).status_code == 200
    finally:
        srv.kill()
