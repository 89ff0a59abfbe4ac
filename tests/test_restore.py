"""Backup of a server in use, restore on a fresh data_dir, and the peers carry on.

a.test hosts a room with bob of b.test in it. While b.test is down, alice
posts; a.test is backed up *while she goes on posting*, then a.test is lost.
On a fresh data directory ``swfed admin restore`` brings the backup back
(refused while a server runs there, and over a database without --force);
the restored a.test starts with its identity and keys: b.test receives the
queue the backup held and accepts what a.test signs afterwards.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx
import pytest
import trio

from swfed.storage.maintenance import integrity_problems
from tests.conftest import bearer
from tests.harness import ServerProcess, federated_servers, running, wait_for

pytestmark = pytest.mark.sqlite_only("backup, restore and db check work on the SQLite file")


async def ok(c: httpx.AsyncClient, token: str, method: str, path: str,
             body: object = None) -> dict:
    r = await c.request(method, path, json=body, headers=bearer(token))
    assert r.status_code in (200, 201), (method, path, r.text)
    return dict(r.json())


def fresh_copy(server: ServerProcess, root: Path) -> ServerProcess:
    """Same name, port, certificate and federation settings; an empty data_dir."""
    cfg = tomllib.loads(server.config_path.read_text())
    tls = cfg["server"]["tls"]
    return ServerProcess(root, server.name, tls=(Path(tls["certfile"]), Path(tls["keyfile"])),
                         port=server.port, extra={
                             "federation": cfg["federation"],
                             "federation.resolve": cfg["federation"].pop("resolve")})


async def test_backup_in_use_then_restore_elsewhere(tmp_path: Path) -> None:
    net, (a, b) = federated_servers(tmp_path, ["a.test", "b.test"])
    backup = tmp_path / "backups" / "a.sqlite3"
    ctx = net.ssl_context()
    with running(a, b):
        alice, bob = a.create_user("alice"), b.create_user("bob")
        async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=30) as ca, \
                httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=30) as cb:
            for c, srv in ((ca, a), (cb, b)):
                await ok(c, srv.create_user("root", admin=True), "PUT",
                         "/v1/admin/federation/policy", {"default_mode": "open"})
            room = (await ok(ca, alice, "POST", "/v1/rooms",
                             {"name": "kept", "federate": True}))["room_id"]
            await ok(ca, alice, "POST", f"/v1/rooms/{room}/invites", {"fqid": "@bob:b.test"})

            async def invite() -> str | None:
                notes = (await ok(cb, bob, "GET", "/v1/me/notifications?limit=200"))["data"]
                return next((n["invite_id"] for n in notes if n["type"] == "invite"
                             and n["room_id"] == room), None)

            await ok(cb, bob, "POST", f"/v1/me/invites/{await wait_for(invite)}/accept")

            async def members() -> dict:
                r = await ca.get(f"/v1/rooms/{room}/members", headers=bearer(alice))
                return {m["fqid"]: m["membership"] for m in r.json()["data"]}

            await wait_for(lambda: _joined(members()), what="bob joined at a.test")
        b.kill()  # from here on a.test's queue toward b.test grows
        async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=30) as ca:
            before = [(await ok(ca, alice, "POST", f"/v1/rooms/{room}/messages",
                                {"body": f"before {i}"}))["event_id"] for i in range(3)]
            during: list[str] = []
            done = trio.Event()

            async def back_up() -> None:
                await trio.to_thread.run_sync(lambda: a.cli("admin", "backup", str(backup)))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(back_up)
                while not done.is_set():  # posting while it backs up
                    during.append((await ok(ca, alice, "POST", f"/v1/rooms/{room}/messages",
                                            {"body": f"during {len(during)}"}))["event_id"])
            after = (await ok(ca, alice, "POST", f"/v1/rooms/{room}/messages",
                              {"body": "after the backup"}))["event_id"]
        assert during, "the backup was over before a single post"
        assert backup.stat().st_mode & 0o777 == 0o600
    # a.test is lost; a new machine, the same name, an empty data_dir
    a2 = fresh_copy(a, tmp_path / "a2")
    result = a2.cli("admin", "restore", str(backup), "--json")
    assert json.loads(result.stdout)["schema"] >= 10
    again = a2.cli("admin", "restore", str(backup), check=False)
    assert again.returncode == 1 and "SW_RESTORE_OVER_DATA" in again.stderr
    assert a2.cli("admin", "db", "check").stdout.strip().endswith(": ok")
    with running(a2, b):
        busy = a2.cli("admin", "restore", str(backup), "--force", check=False)
        assert busy.returncode == 1 and "SW_SERVER_RUNNING" in busy.stderr, busy.stderr
        async with httpx.AsyncClient(base_url=a2.url, verify=ctx, timeout=30) as ca, \
                httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=30) as cb:
            # alice's token came back with her; the history she wrote up to the backup too
            page = await ok(ca, alice, "GET", f"/v1/rooms/{room}/messages?limit=200")
            kept = {e["event_id"] for e in page["data"]}
            assert set(before) <= kept and after not in kept
            assert during[0] in kept or not set(during) & kept  # a prefix, if anything

            async def at_b() -> set[str]:
                r = await cb.get(f"/v1/rooms/{room}/messages?limit=200", headers=bearer(bob))
                return {e["event_id"] for e in r.json()["data"]} if r.status_code == 200 \
                    else set()

            # the queue the backup held reaches b.test, signed with the restored key
            await wait_for(lambda: _has(at_b(), set(before)), timeout=30,
                           what="the queued messages at b.test")
            new = (await ok(ca, alice, "POST", f"/v1/rooms/{room}/messages",
                            {"body": "back again"}))["event_id"]
            await wait_for(lambda: _has(at_b(), {new}), timeout=30,
                           what="a message signed after the restore at b.test")
            assert after not in await at_b()
            assert set(during) & kept <= await at_b()
    assert not b.logs("federation.signature_verify_failed")


async def _joined(got: object) -> bool:
    return (await got).get("@bob:b.test") == "join"  # type: ignore[attr-defined, no-any-return]


async def _has(got: object, want: set[str]) -> bool:
    return want <= await got  # type: ignore[operator, no-any-return]


async def test_scheduled_backups_rotate(tmp_path: Path) -> None:
    """``[backup]``: a copy every interval, 0600, with the media files beside it; only
    the newest ``keep`` stay."""
    server = ServerProcess(tmp_path, "localhost", extra={
        "backup": {"interval_hours": 0.0003, "keep": 2, "dir": str(tmp_path / "copies")}})
    with running(server):
        alice = server.create_user("alice")
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/v1/media", content=b"%PDF-1.4 the minutes",
                                headers={**bearer(alice), "Content-Type": "application/pdf"})
            assert r.status_code == 201, r.text
            sha256 = r.json()["sha256"]
        await wait_for(lambda: len(server.logs("backup.done")) >= 4, timeout=30,
                       what="four scheduled backups")
        done = server.logs("backup.done")
    files = sorted(p for p in (tmp_path / "copies").iterdir() if p.suffix == ".sqlite3")
    assert len(files) == 2  # the newest two; the others were rotated away
    media = sorted(p for p in (tmp_path / "copies").iterdir() if p.suffix == ".media")
    assert [p.name for p in media] == [f"{p.name}.media" for p in files]  # theirs went too
    for path in media:
        copy = path / sha256[:2] / sha256
        assert copy.read_bytes() == b"%PDF-1.4 the minutes"
        assert copy.stat().st_mode & 0o777 == 0o600
    assert {p.name for p in files} <= {Path(x["file"]).name for x in server.logs("backup.done")}
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600
        assert integrity_problems(path) == []
    assert any(x["removed"] for x in done)
    assert (tmp_path / "copies").stat().st_mode & 0o777 == 0o700


def test_db_check_and_a_damaged_backup(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", "localhost")
    server.create_user("alice")
    assert server.cli("admin", "db", "check").stdout.strip().endswith("swfed.sqlite3: ok")
    copy = tmp_path / "copy.sqlite3"
    server.cli("admin", "backup", str(copy))
    # damage the copy: overwrite pages in the middle with noise
    data = bytearray(copy.read_bytes())
    page = 4096
    data[page * 3:page * 6] = bytes(range(256)) * (page * 3 // 256)
    copy.write_bytes(bytes(data))
    other = ServerProcess(tmp_path / "other", "localhost")
    (tmp_path / "other" / "data").mkdir(mode=0o700)
    (tmp_path / "other" / "data" / "swfed.sqlite3").write_bytes(bytes(data))
    check = other.cli("admin", "db", "check", check=False)
    assert check.returncode == 1
    lines = check.stdout.strip().splitlines()
    assert lines and all(line.startswith(str(tmp_path / "other" / "data")) for line in lines)
    assert not any(line.endswith(": ok") for line in lines)
    (tmp_path / "other" / "data" / "swfed.sqlite3").unlink()
    refused = other.cli("admin", "restore", str(copy), check=False)
    assert refused.returncode == 1 and "SW_BAD_BACKUP" in refused.stderr
    assert not (tmp_path / "other" / "data" / "swfed.sqlite3").exists()


def test_restore_brings_the_media_files_beside_the_backup(tmp_path: Path) -> None:
    """A backup's PATH.media/ (the files of messages) comes back to data_dir/media."""
    server = ServerProcess(tmp_path / "srv", "localhost")
    server.create_user("alice")
    backup = tmp_path / "b.sqlite3"
    server.cli("admin", "backup", str(backup))
    media = Path(f"{backup}.media")
    (media / "ab").mkdir(parents=True, exist_ok=True)
    (media / "ab" / "abcdef").write_bytes(b"a picture")
    fresh = ServerProcess(tmp_path / "fresh", "localhost")
    out = json.loads(fresh.cli("admin", "restore", str(backup), "--json").stdout)
    assert out["media_files"] >= 1
    restored = tmp_path / "fresh" / "data" / "media" / "ab" / "abcdef"
    assert restored.read_bytes() == b"a picture"
    assert restored.stat().st_mode & 0o777 == 0o600
