"""Retention (issue 10, build 8): the housekeeping task prunes what only grows.

Rows are made old by writing them into the SQLite file while the server is
stopped, then by shifting the server's clock (``SWFED_TEST_CLOCK_OFFSET_MS``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess, running, wait_for

pytestmark = pytest.mark.sqlite_only("seeds old rows straight into the SQLite file")

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000


def _connect(srv: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(srv.root / "data" / "swfed.sqlite3")


def _count(srv: ServerProcess, sql: str, *args: object) -> int:
    conn = _connect(srv)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def _seed(srv: ServerProcess, now: int) -> None:
    """Old and fresh rows in every table the housekeeping prunes."""
    conn = _connect(srv)
    tid = conn.execute("SELECT tenant_id FROM tenants WHERE is_default").fetchone()[0]
    with conn:
        for age_days, n in ((40, 2500), (0, 5)):
            conn.executemany(
                "INSERT INTO sw_audit (tenant_id, action, outcome, created_at)"
                " VALUES (?, 'federation.test', 'ok', ?)",
                [(tid, now - age_days * DAY_MS - i) for i in range(n)])
        for age_days, n in ((40, 2100), (0, 3)):
            conn.executemany(
                "INSERT INTO fed_rejected (tenant_id, peer, reason, message, created_at)"
                " VALUES (?, 'peer.test', 'SW_FED_BAD_EVENT', 'x', ?)",
                [(tid, now - age_days * DAY_MS - i) for i in range(n)])
        hour = now // HOUR_MS
        conn.executemany(
            "INSERT INTO peer_counts (tenant_id, server_name, hour, sent, received)"
            " VALUES (?, 'peer.test', ?, 1, 1)",
            [(tid, hour - 10 * 24 - i, ) for i in range(50)] + [(tid, hour), (tid, hour - 1)])
        for i, expires in enumerate((now - DAY_MS, now - 1, now - 2, now + DAY_MS)):
            digest = hashlib.sha256(f"session-{i}".encode()).digest()
            conn.execute("INSERT INTO tokens (token_hash, tenant_id, local_id, created_at)"
                         " VALUES (?, ?, 'alice', ?)", (digest, tid, now - 31 * DAY_MS))
            conn.execute("INSERT INTO login_sessions (token_hash, tenant_id, local_id,"
                         " created_at, expires_at) VALUES (?, ?, 'alice', ?, ?)",
                         (digest, tid, now - 31 * DAY_MS, expires))
    conn.close()


@pytest.fixture
def srv(tmp_path: Path) -> ServerProcess:
    return ServerProcess(tmp_path / "srv", "localhost", extra={"retention": {
        "audit_days": 30, "rejected_days": 30, "peer_counts_days": 7, "batch_rows": 1000,
        "interval_seconds": 3600.0}})


async def test_housekeeping_prunes_old_rows_in_batches(srv: ServerProcess) -> None:
    with running(srv):
        alice = srv.create_user("alice")
    now = int(time.time() * 1000)
    _seed(srv, now)
    audit_before = _count(srv, "SELECT count(*) FROM sw_audit")
    with running(srv):
        def pruned() -> bool:
            return bool(srv.logs("housekeeping.pruned"))

        await wait_for(pruned, what="housekeeping.pruned in the log")
        line = srv.logs("housekeeping.pruned")[0]
        assert line["sw_audit"] == 2500 and line["fed_rejected"] == 2100
        assert line["peer_counts"] == 50 and line["login_sessions"] == 3
        assert _count(srv, "SELECT count(*) FROM sw_audit WHERE created_at < ?",
                      now - 30 * DAY_MS) == 0
        assert _count(srv, "SELECT count(*) FROM sw_audit") == audit_before - 2500
        assert _count(srv, "SELECT count(*) FROM fed_rejected") == 3
        assert _count(srv, "SELECT count(*) FROM peer_counts") == 2
        assert _count(srv, "SELECT count(*) FROM login_sessions") == 1
        assert _count(srv, "SELECT count(*) FROM tokens WHERE local_id = 'alice'") == 2
        # the server writes and answers as before
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
            r = await c.post("/v1/rooms", json={"name": "after"}, headers=bearer(alice))
            assert r.status_code == 201, r.text
            assert (await c.get("/healthz")).status_code == 200
    assert not srv.logs("housekeeping.failed")

    # 40 days later (the server's clock): today's rows are old too.
    srv.env["SWFED_TEST_CLOCK_OFFSET_MS"] = str(40 * DAY_MS)
    srv.log_lines.clear()
    with running(srv):
        await wait_for(lambda: srv.logs("housekeeping.pruned"), what="the second prune")
        assert _count(srv, "SELECT count(*) FROM fed_rejected") == 0
        assert _count(srv, "SELECT count(*) FROM sw_audit WHERE action = 'federation.test'") == 0
        assert _count(srv, "SELECT count(*) FROM peer_counts") == 0
        assert _count(srv, "SELECT count(*) FROM login_sessions") == 0


async def test_pruning_a_big_backlog_does_not_stall_writes(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "big", "localhost", extra={"retention": {
        "audit_days": 30, "batch_rows": 1000, "interval_seconds": 1.0}})
    with running(srv):
        alice = srv.create_user("alice")
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            r = await c.post("/v1/rooms", json={"name": "busy"}, headers=bearer(alice))
            room_id = r.json()["room_id"]
            old = int(time.time() * 1000) - 40 * DAY_MS
            conn = _connect(srv)
            conn.execute("PRAGMA busy_timeout = 10000")
            with conn:
                conn.executemany(
                    "INSERT INTO sw_audit (tenant_id, action, outcome, details, created_at)"
                    " VALUES (1, 'federation.test', 'ok', ?, ?)",
                    [("x" * 200, old - i) for i in range(40_000)])
            conn.close()
            latencies: list[float] = []

            async def pruned() -> bool:
                t0 = time.perf_counter()
                r = await c.post(f"/v1/rooms/{room_id}/messages", json={"body": "still here"},
                                 headers=bearer(alice))
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 201, r.text
                return any(line.get("sw_audit") == 40_000
                           for line in srv.logs("housekeeping.pruned"))

            await wait_for(pruned, timeout=60, interval=0.01, what="40 000 rows pruned")
    latencies.sort()
    print(f"\nwrites while pruning 40 000 rows in batches of 1000: {len(latencies)} posts, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 5.0  # generous: a stall would be the whole prune at once
