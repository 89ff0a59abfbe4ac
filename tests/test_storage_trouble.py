"""Storage trouble has a name: a full disk or a read-only database, end to end.

- A real full disk: the server's ``data_dir`` is a small tmpfs (mounted here,
  so these need root; skipped otherwise), filled with a ballast file while the
  server runs. Writes answer 503 ``SW_STORAGE_UNAVAILABLE`` saying what to do,
  ``/healthz`` names it, the log holds one ``storage.unavailable`` line and no
  traceback, and once the ballast is gone writes resume by themselves. Every
  write answered 2xx is still there, even after a kill -9. The same test runs
  without root through the test-only page limit hook (below). (A read-only
  database is covered against real SQLite in tests/storage/test_db_trouble.py:
  a mounted file system cannot be remounted read-only under an open database.)
- a's own disk fills while it delivers to b: its sender pauses (it cannot
  record deliveries), the process stays up, and once space returns every
  queued event reaches b exactly once.
- Between two servers (no root needed: the test-only page limit hook
  ``SWFED_TEST_MAX_PAGES_FILE`` makes b's database "full"): b answers a's
  ``/send`` with 503, a keeps the events queued (no refusal recorded), and
  delivers them once b can write again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, peer_row
from tests.harness import ServerProcess, running, wait_for
from tests.test_federation_delivery import (
    _equals,
    clients,
    dm,
    history,
    open_policies,
    setup_pair,
)

BIG = "x" * 4000


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted at ``path`` for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write a ballast file until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


async def post(c: httpx.AsyncClient, token: str, room_id: str, body: str) -> httpx.Response:
    return await c.post(f"/v1/rooms/{room_id}/messages", json={"body": body},
                        headers=bearer(token))


async def stored_ids(c: httpx.AsyncClient, token: str, room_id: str) -> set[str]:
    out: set[str] = set()
    params: dict[str, Any] = {"limit": 200}
    while True:
        r = await c.get(f"/v1/rooms/{room_id}/messages", params=params, headers=bearer(token))
        assert r.status_code == 200, r.text
        out |= {e["event_id"] for e in r.json()["data"]}
        if "next" not in r.json():
            return out
        params["before"] = r.json()["next"]


def assert_refused_for_storage(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "SW_STORAGE_UNAVAILABLE"
    assert what in err["message"], err["message"]
    assert r.headers["Retry-After"] == "10"


class FullDisk:
    """Fills and frees "the disk" of a server: a real tmpfs, or the page-limit hook."""

    def __init__(self, tmp_path: Path, real: bool) -> None:
        self.real = real
        self.data = tmp_path / "a" / "data"
        self.limit = tmp_path / "page-limit"
        self.env = {} if real else {"SWFED_TEST_MAX_PAGES_FILE": str(self.limit)}

    def mounted(self) -> contextlib.AbstractContextManager[None]:
        return small_disk(self.data, "24m") if self.real else contextlib.nullcontext()

    def fill(self) -> None:
        if self.real:
            fill(self.data / "ballast")
        else:
            self.limit.write_text("1")

    def free(self) -> None:
        if self.real:
            (self.data / "ballast").unlink()
        else:
            self.limit.write_text("0")


@pytest.mark.parametrize("real", [True, False], ids=["tmpfs", "page_limit"])
async def test_disk_full_then_back(tmp_path: Path, real: bool) -> None:
    disk = FullDisk(tmp_path, real)
    with disk.mounted():
        srv = ServerProcess(tmp_path / "a", env=disk.env)
        with running(srv):
            token = srv.create_user("dora")
            acked: list[str] = []
            async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
                r = await c.post("/v1/rooms", json={"name": "full"}, headers=bearer(token))
                room_id = r.json()["room_id"]
                for i in range(20):
                    r = await post(c, token, room_id, f"before {i}")
                    assert r.status_code == 201
                    acked.append(r.json()["event_id"])

                # the disk fills up while the server runs
                disk.fill()
                refused = 0
                for i in range(1000):
                    r = await post(c, token, room_id, f"{i} {BIG}")
                    if r.status_code == 201:
                        acked.append(r.json()["event_id"])
                        continue
                    assert_refused_for_storage(r, "free disk space under data_dir")
                    refused += 1
                    if refused == 30:
                        break
                assert refused == 30, "the disk never filled up"
                r = await c.get("/healthz")
                assert r.status_code == 503
                storage = r.json()["checks"]["storage"]
                assert storage["ok"] is False and storage["code"] == "SW_STORAGE_UNAVAILABLE"
                assert storage["reason"] == "disk_full"
                # reads still work
                assert set(acked) <= await stored_ids(c, token, room_id)

                # space returns: writes resume by themselves
                disk.free()
                r = await post(c, token, room_id, "after")
                assert r.status_code == 201, r.text
                acked.append(r.json()["event_id"])
                assert (await c.get("/healthz")).status_code == 200

            # the log: one line (a minute's report) for 30 refused writes, its
            # recovery, and no traceback at all (read from the server's stderr by
            # a thread of ours: wait for the line rather than race it)
            await wait_for(lambda: srv.logs("storage.recovered"), what="storage.recovered")
            unavailable = srv.logs("storage.unavailable")
            assert len(unavailable) == 1, unavailable
            assert unavailable[0]["reason"] == "disk_full"
            assert "full" in unavailable[0]["sqlite_message"]
            assert len(srv.logs("storage.recovered")) == 1
            assert not any("Traceback" in line for line in srv.log_lines)
            assert not srv.logs("request.internal_error")

            # nothing acknowledged is lost, even across a kill -9
            srv.kill()
            srv.start()
            async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
                assert set(acked) <= await stored_ids(c, token, room_id)


async def test_peer_with_a_full_disk_is_retried_not_refused(tmp_path: Path) -> None:
    limit = tmp_path / "b-page-limit"
    limit.write_text("0")
    net, a, b, tokens = await setup_pair(tmp_path)
    b.stop()
    b.env["SWFED_TEST_MAX_PAGES_FILE"] = str(limit)
    b.start()
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            await open_policies(ca, cb, tokens)
            room_id = await dm(ca, cb, tokens)
            limit.write_text("1")  # b's database can't grow any more
            sent = [f"while full {i} {BIG}" for i in range(40)]
            for body in sent:
                r = await post(ca, tokens["alice"], room_id, body)
                assert r.status_code == 201

            async def refused_for_storage() -> Any:
                row = await peer_row(ca, tokens["admin_a"], "b.test")
                return row["queue_depth"] and "SW_STORAGE_UNAVAILABLE" in (row["last_error"] or "")

            await wait_for(refused_for_storage, what="b answering 503 SW_STORAGE_UNAVAILABLE")
            limit.write_text("0")  # space returns on b
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), sent),
                           timeout=40, what="everything delivered once b can write")
            # a never took the 503 for a refusal of the events
            r = await ca.get("/v1/admin/federation/rejected", headers=bearer(tokens["admin_a"]))
            assert r.json()["data"] == []
        assert b.logs("storage.unavailable")
        assert not any("Traceback" in line for line in b.log_lines)
    finally:
        a.kill()
        b.kill()


async def test_sender_whose_own_disk_fills_pauses_and_delivers_once(tmp_path: Path) -> None:
    """a's disk fills while it delivers to b: a neither crashes nor refuses anything;
    once space returns it finishes, and b stores every event exactly once."""
    net, a, b, tokens = await setup_pair(tmp_path)
    a.kill()
    data = tmp_path / "a.test" / "data"
    moved = tmp_path / "a-data-before"
    data.rename(moved)
    with small_disk(data, "24m"):
        for item in moved.iterdir():
            (data / item.name).write_bytes(item.read_bytes())
        a.start()
        try:
            ca, cb = clients(net, a, b)
            async with ca, cb:
                await open_policies(ca, cb, tokens)
                room_id = await dm(ca, cb, tokens)
                assert b.stop() == 0
                sent = [f"queued {i}" for i in range(30)]
                for body in sent:
                    r = await post(ca, tokens["alice"], room_id, body)
                    assert r.status_code == 201
                fill(data / "ballast")
                b.start()
                # wake a's queue now (this touches no storage)
                r = await ca.post("/v1/admin/federation/peers/b.test/retry",
                                  headers=bearer(tokens["admin_a"]))
                assert r.status_code == 200
                await wait_for(lambda: a.logs("federation.sender.paused"), timeout=30,
                               what="a's sender pausing on its full disk")
                assert (await ca.get("/healthz")).status_code == 503
                (data / "ballast").unlink()
                await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), sent),
                               timeout=30, what="every queued event on b, once")

                async def drained() -> bool:
                    row = await peer_row(ca, tokens["admin_a"], "b.test")
                    return row["queue_depth"] == 0

                await wait_for(drained, timeout=30, what="a's outbox to b drained")
                assert a.logs("federation.sender.resumed")
                assert (await ca.get("/healthz")).status_code == 200
                r = await ca.get("/v1/admin/federation/rejected",
                                 headers=bearer(tokens["admin_a"]))
                assert r.json()["data"] == []
            assert a.proc is not None and a.proc.poll() is None
            assert not any("Traceback" in line for line in a.log_lines)
        finally:
            a.kill()
            b.kill()
