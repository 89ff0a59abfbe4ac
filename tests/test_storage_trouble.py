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
- On PostgreSQL (SWFED_TEST_BACKEND=postgresql; the tests above are about the
  SQLite file and skip there): the server's own cluster is stopped while
  clients post, and made read-only (default_transaction_read_only, reloaded);
  writes answer 503 naming it, ``/healthz`` names it, one log line, and the
  server resumes by itself when PostgreSQL is back, every 2xx kept. A full
  disk is not faked on PostgreSQL: a cluster whose WAL cannot be written
  PANICs rather than answering 53100, so the 53100 mapping is covered only by
  name (swfed.storage.pg).
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
import trio

from tests import pg
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

sqlite_file = pytest.mark.sqlite_only("fills the disk or the page limit of the SQLite file")
postgresql_only = pytest.mark.skipif(not pg.on_pg(), reason="PostgreSQL only "
                                     "(SWFED_TEST_BACKEND=postgresql; scripts/test-pg)")


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


@sqlite_file
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


@sqlite_file
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


@sqlite_file
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


def pg_server(tmp_path: Path) -> tuple[pg.Cluster, ServerProcess]:
    """A server on a cluster of its own (stopped and started by the test)."""
    own = pg.Cluster()
    srv = ServerProcess(tmp_path / "a", extra={"storage": {"backend": "postgresql",
                                                           "url": own.new_database()}})
    return own, srv


@postgresql_only
async def test_postgresql_stopped_under_load_then_back(tmp_path: Path) -> None:
    own, srv = pg_server(tmp_path)
    try:
        with running(srv):
            token = srv.create_user("dora")
            acked: list[str] = []
            answers: list[int] = []
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                r = await c.post("/v1/rooms", json={"name": "down"}, headers=bearer(token))
                room_id = r.json()["room_id"]
                stop = trio.Event()

                async def poster(n: int) -> None:
                    i = 0
                    while not stop.is_set():
                        r = await post(c, token, room_id, f"{n}-{i}")
                        i += 1
                        answers.append(r.status_code)
                        if r.status_code == 201:
                            acked.append(r.json()["event_id"])
                        else:
                            assert_refused_for_storage(r, "PostgreSQL")
                            await trio.sleep(0.05)

                async with trio.open_nursery() as nursery:
                    for n in range(4):
                        nursery.start_soon(poster, n)
                    await wait_for(lambda: len(acked) >= 20, what="writes before")
                    await trio.to_thread.run_sync(own.stop)  # under load
                    await wait_for(lambda: answers.count(503) >= 8, timeout=60,
                                   what="refused writes")
                    r = await c.get("/healthz")
                    assert r.status_code == 503
                    storage = r.json()["checks"]["storage"]
                    assert storage["code"] == "SW_STORAGE_UNAVAILABLE"
                    assert storage["reason"] == "unreachable"
                    await trio.to_thread.run_sync(own.start)
                    # writes resume by themselves
                    after = len(acked)
                    await wait_for(lambda: len(acked) >= after + 20, timeout=60,
                                   what="writes after")
                    stop.set()
                assert set(answers) == {201, 503}
                assert (await c.get("/healthz")).status_code == 200
                assert set(acked) <= await stored_ids(c, token, room_id)
            await wait_for(lambda: srv.logs("storage.recovered"), what="storage.recovered")
            unavailable = srv.logs("storage.unavailable")
            assert len(unavailable) == 1, unavailable
            assert unavailable[0]["reason"] == "unreachable"
            assert unavailable[0]["backend"] == "postgresql"
            assert not srv.logs("request.internal_error")
            assert not any("Traceback" in line for line in srv.log_lines)

            # nothing acknowledged is lost, even across a kill -9
            srv.kill()
            srv.start()
            async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
                assert set(acked) <= await stored_ids(c, token, room_id)
    finally:
        own.destroy()


@postgresql_only
async def test_postgresql_read_only_then_writable(tmp_path: Path) -> None:
    own, srv = pg_server(tmp_path)
    try:
        with running(srv):
            token = srv.create_user("dora")
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                r = await c.post("/v1/rooms", json={"name": "ro"}, headers=bearer(token))
                room_id = r.json()["room_id"]
                r = await post(c, token, room_id, "before")
                assert r.status_code == 201
                acked = [r.json()["event_id"]]
                own.psql("ALTER SYSTEM SET default_transaction_read_only = on")
                own.psql("SELECT pg_reload_conf()")

                async def refused() -> bool:
                    r = await post(c, token, room_id, "while read-only")
                    if r.status_code == 201:
                        acked.append(r.json()["event_id"])
                        return False
                    assert_refused_for_storage(r, "read-only")
                    return True

                await wait_for(refused, what="a refused write")
                r = await c.get("/healthz")
                assert r.status_code == 503
                assert r.json()["checks"]["storage"]["reason"] == "read_only"
                # reads still work
                assert set(acked) <= await stored_ids(c, token, room_id)
                own.psql("ALTER SYSTEM RESET default_transaction_read_only")
                own.psql("SELECT pg_reload_conf()")

                async def stored() -> bool:
                    r = await post(c, token, room_id, "after")
                    if r.status_code == 201:
                        acked.append(r.json()["event_id"])
                        return True
                    return False

                await wait_for(stored, what="writes again")
                assert set(acked) <= await stored_ids(c, token, room_id)
            assert srv.logs("storage.unavailable")[0]["reason"] == "read_only"
            assert not srv.logs("request.internal_error")
    finally:
        own.destroy()
