"""Secrets at rest: the data directory 0700, the database, WAL, SHM and backups 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.harness import ServerProcess, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_keys_at_rest_are_the_owners_alone(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "a").start()
    try:
        data = tmp_path / "a" / "data"
        srv.create_user("dora")  # a write: the WAL and SHM exist
        assert mode(data) == 0o700
        for name in ("swfed.sqlite3", "swfed.sqlite3-wal", "swfed.sqlite3-shm"):
            assert mode(data / name) == 0o600, name
        backup = tmp_path / "backup.sqlite3"
        srv.cli("admin", "backup", str(backup))
        assert mode(backup) == 0o600
        assert not srv.logs("storage.permissions")

        # an operator loosened them: the next start says so, with the fix
        srv.stop()
        data.chmod(0o755)
        (data / "swfed.sqlite3").chmod(0o644)
        srv.start()
        warned = await wait_for(lambda: srv.logs("storage.permissions"),
                                what="the permissions warning")
        assert "chmod 700" in warned[0]["fix"] and str(data) in warned[0]["fix"]
        assert set(warned[0]["files"]) == {str(data), str(data / "swfed.sqlite3")}
    finally:
        srv.kill()
