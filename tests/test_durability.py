"""Process life: clean shutdown, restart keeps data, kill -9 after a 2xx loses nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests import pg
from tests.conftest import bearer
from tests.harness import ServerProcess


async def test_restart_and_kill9_lose_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "a").start()
    try:
        token = srv.create_user("dora")
        acked: list[str] = []
        async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
            r = await c.post("/v1/rooms", json={"name": "durable"}, headers=bearer(token))
            room_id = r.json()["room_id"]

            async def post(i: int) -> None:
                r = await c.post(f"/v1/rooms/{room_id}/messages", json={"body": f"msg {i}"},
                                 headers=bearer(token))
                if r.status_code == 201:
                    acked.append(r.json()["event_id"])

            # many concurrent writers: these go through group commit
            async with trio.open_nursery() as nursery:
                for i in range(60):
                    nursery.start_soon(post, i)
        assert len(acked) == 60
        srv.kill()  # SIGKILL right after the last 2xx

        srv.start()
        async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
            r = await c.get(f"/v1/rooms/{room_id}/messages", params={"limit": 200},
                            headers=bearer(token))
            stored = {e["event_id"] for e in r.json()["data"] if e["type"] == "message"}
        assert stored == set(acked)

        # SIGTERM: exit 0 and no traceback
        assert srv.stop() == 0
        assert not any("Traceback" in line for line in srv.log_lines)
        assert srv.logs("server.stopped")

        srv.start()
        async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
            r = await c.get("/v1/me", headers=bearer(token))
            assert r.status_code == 200
    finally:
        srv.kill()


@pytest.mark.sqlite_only("swfed admin backup copies the SQLite file")
async def test_online_backup_restores(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "a").start()
    try:
        token = srv.create_user("erin")
        async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
            r = await c.post("/v1/rooms", json={"name": "kept"}, headers=bearer(token))
            room_id = r.json()["room_id"]
            await c.post(f"/v1/rooms/{room_id}/messages", json={"body": "in the backup"},
                         headers=bearer(token))
        backup = tmp_path / "backup.sqlite3"
        srv.cli("admin", "backup", str(backup))  # while the server runs
        again = srv.cli("admin", "backup", str(backup), check=False)
        assert again.returncode == 1 and "SW_BACKUP_EXISTS" in again.stderr
    finally:
        srv.kill()
    assert sqlite3.connect(backup).execute("PRAGMA integrity_check").fetchone() == ("ok",)

    restored = ServerProcess(tmp_path / "b")
    (tmp_path / "b" / "data").mkdir(parents=True)
    backup.rename(tmp_path / "b" / "data" / "swfed.sqlite3")
    restored.start()
    try:
        async with httpx.AsyncClient(base_url=restored.url, timeout=20) as c:
            r = await c.get(f"/v1/rooms/{room_id}/messages", headers=bearer(token))
            assert "in the backup" in [e["content"].get("body") for e in r.json()["data"]]
    finally:
        restored.kill()


def test_bad_config_stops_start_with_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "server.toml"
    conf.write_text('[server]\nname = "localhost"\nbind = 8448\n')
    result = subprocess.run([sys.executable, "-m", "swfed", "--config", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "server.toml" in lines[0] and "bind" in lines[0]


def test_postgresql_without_psycopg_stops_start_with_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "server.toml"
    conf.write_text(f'[server]\nname = "localhost"\ndata_dir = "{tmp_path / "data"}"\n'
                    '[storage]\nbackend = "postgresql"\nurl = "postgresql:///nowhere"\n')
    # the interpreter as it is, minus psycopg: as on a machine without the extra
    code = ("import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None;"
            "from swfed.cli import main; sys.exit(main())")
    for args in ([], ["admin", "user", "create", "fred"]):
        result = subprocess.run([sys.executable, "-c", code, "--config", str(conf), *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "pip install 'swfed[postgresql]'" in lines[0] and "server.toml" in lines[0]


def test_cli_user_create_json(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "a")
    out = srv.cli("admin", "user", "create", "fred", "--admin", "--display-name", "Fred F",
                  "--json").stdout
    import json

    obj = json.loads(out)
    assert obj["token"].startswith("swt_") and obj["fqid"] == "@fred:localhost"
    dup = srv.cli("admin", "user", "create", "fred", check=False)
    assert dup.returncode == 1 and "SW_USER_EXISTS" in dup.stderr
    # tokens are stored hashed: the token is nowhere in the file (on PostgreSQL:
    # not in the tokens table)
    if pg.on_pg():
        conn = srv.db()
        hashes = [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM tokens")]
        conn.close()
        assert hashes and all(obj["token"].encode() not in h for h in hashes)
    else:
        data = (tmp_path / "a" / "data" / "swfed.sqlite3").read_bytes()
        assert obj["token"].encode() not in data
