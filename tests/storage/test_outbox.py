"""The outbox on a real file: what the sender joins into a /send body, and how
an event queued for many peers is stored once and leaves with its last one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from swfed.core.backoff import RetryState
from swfed.core.canonical import encode_canonical_json
from swfed.storage.db import connect
from swfed.storage.migrations import MIGRATIONS, migrate, schema_version
from swfed.storage.peers import (
    enqueue_txn,
    outbox_batch_txn,
    outbox_destinations_txn,
    outbox_done_txn,
    peer_failed_txn,
    peer_ok_txn,
    peers_view_txn,
    queue_depths_txn,
    retry_state_txn,
)
from swfed.storage.tenants import create_tenant_txn
from tests import pg


def _at_version(path: Path, version: int) -> sqlite3.Connection:
    """A file migrated only up to ``version`` (as an older swfed left it)."""
    conn = connect(path, synchronous="FULL", busy_timeout_ms=5000)
    for number, script in MIGRATIONS:
        if number > version:
            break
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {number}")
    assert schema_version(conn) == version
    return conn


def _event(event_id: str, body: str = "é") -> dict[str, object]:
    return {"room_id": "!r:a.test", "event_id": event_id, "content": {"body": body},
            "type": "message"}


def _tables(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("outbox", "outbox_events")}


@pytest.mark.sqlite_only("migrates a SQLite file of version 6")
def test_rows_queued_by_an_older_swfed_are_sent_as_canonical_json(tmp_path: Path) -> None:
    """Before migration 7 the outbox held json.dumps text; the /send body is joined
    from the rows' bytes and signed as they are, so old rows are re-encoded."""
    conn = _at_version(tmp_path / "db.sqlite3", 6)
    event = _event("e1")
    conn.execute("INSERT INTO outbox (tenant_id, destination, event_id, room_id, payload,"
                 " created_at) VALUES (1, 'b.test', 'e1', NULL, ?, 0)",
                 (json.dumps(event, ensure_ascii=False),))
    conn.commit()
    migrate(conn)
    enqueue_txn(conn, 1, ["b.test", "c.test"], {**event, "event_id": "e2"}, 0)
    queued = outbox_batch_txn(conn, 1, "b.test", 10)
    assert [q.event_id for q in queued] == ["e1", "e2"]
    assert queued[0].raw == encode_canonical_json(event) and queued[0].room_id == "!r:a.test"
    assert queued[1].raw == encode_canonical_json({**event, "event_id": "e2"})
    assert [q.event_id for q in outbox_batch_txn(conn, 1, "c.test", 10)] == ["e2"]
    conn.close()


@pytest.mark.sqlite_only("migrates a SQLite file of version 7")
def test_migration_8_keeps_queued_rows_their_ids_order_and_bytes(tmp_path: Path) -> None:
    """Rows queued under migration 7 (a payload copy per destination) come out of
    migration 8 as they went in: same ids, order per destination, bytes, times;
    new rows get ids above every id the old table ever gave."""
    conn = _at_version(tmp_path / "db.sqlite3", 7)
    rows = []
    for i, dest in enumerate(["b.test", "c.test", "b.test", "c.test", "b.test", "d.test"]):
        event = _event(f"e{i // 2}", body=f"m{i}")
        rows.append((dest, event))
        conn.execute("INSERT INTO outbox (tenant_id, destination, event_id, room_id, payload,"
                     " created_at, canonical) VALUES (1, ?, ?, ?, ?, ?, 1)",
                     (dest, event["event_id"], event["room_id"],
                      encode_canonical_json(event).decode(), 1000 + i))
    # a row sent long ago: the id sequence is past every row still queued
    conn.execute("INSERT INTO outbox (tenant_id, destination, event_id, payload, created_at)"
                 " VALUES (1, 'b.test', 'gone', '{}', 0)")
    conn.execute("DELETE FROM outbox WHERE event_id = 'gone'")
    conn.commit()
    before = {dest: [(r[0], r[1]) for r in conn.execute(
        "SELECT id, payload FROM outbox WHERE destination = ? ORDER BY id", (dest,))]
        for dest in ("b.test", "c.test", "d.test")}
    assert migrate(conn) == MIGRATIONS[-1][0]
    assert _tables(conn) == {"outbox": 6, "outbox_events": 6}
    for dest, old in before.items():
        queued = outbox_batch_txn(conn, 1, dest, 100)
        assert [(q.id, q.raw.decode()) for q in queued] == old
    assert [q.created_at for q in outbox_batch_txn(conn, 1, "b.test", 100)] == [1000, 1002, 1004]
    assert sorted(queue_depths_txn(conn)) == [(1, "b.test", 3), (1, "c.test", 2),
                                              (1, "d.test", 1)]
    enqueue_txn(conn, 1, ["b.test"], _event("new"), 2000)
    queued = outbox_batch_txn(conn, 1, "b.test", 100)
    assert [q.event_id for q in queued][-1] == "new" and queued[-1].id == 8
    # each migrated row settles on its own
    outbox_done_txn(conn, 1, [queued[0].id])
    assert _tables(conn) == {"outbox": 6, "outbox_events": 6}
    conn.close()


def test_an_event_for_many_peers_is_stored_once_and_leaves_with_its_last_peer(
        tmp_path: Path) -> None:
    conn = pg.direct(tmp_path / "db.sqlite3")
    peers = [f"p{i}.test" for i in range(50)]
    enqueue_txn(conn, 1, peers, _event("e1"), 10)
    enqueue_txn(conn, 1, peers[:2], _event("e2"), 11)
    enqueue_txn(conn, 1, [], _event("nowhere"), 12)  # no destination: nothing stored
    assert _tables(conn) == {"outbox": 52, "outbox_events": 2}
    assert conn.execute("SELECT COUNT(*) FROM outbox_events WHERE event_id = 'e1'"
                        ).fetchone()[0] == 1
    assert sorted(outbox_destinations_txn(conn)) == sorted((1, p) for p in peers)
    # every peer gets the same bytes, in order
    raw = encode_canonical_json(_event("e1"))
    assert [q.event_id for q in outbox_batch_txn(conn, 1, "p0.test", 10)] == ["e1", "e2"]
    assert all(outbox_batch_txn(conn, 1, p, 10)[0].raw == raw for p in peers)

    # p0 settles both: e1 waits for the 49 others, e2 for p1
    outbox_done_txn(conn, 1, [q.id for q in outbox_batch_txn(conn, 1, "p0.test", 10)])
    assert _tables(conn) == {"outbox": 50, "outbox_events": 2}
    assert outbox_batch_txn(conn, 1, "p0.test", 10) == []
    # settling the same rows again (a record that ran twice) counts nothing down
    done_p1 = [q.id for q in outbox_batch_txn(conn, 1, "p1.test", 10)]
    outbox_done_txn(conn, 1, done_p1)
    outbox_done_txn(conn, 1, done_p1)
    assert _tables(conn) == {"outbox": 48, "outbox_events": 1}  # e2's last peer: gone
    assert conn.execute("SELECT pending FROM outbox_events").fetchone()[0] == 48
    # another tenant's ids settle nothing of ours
    outbox_done_txn(conn, 2, [q.id for q in outbox_batch_txn(conn, 1, "p2.test", 10)])
    assert _tables(conn) == {"outbox": 48, "outbox_events": 1}
    for p in peers[2:]:
        outbox_done_txn(conn, 1, [q.id for q in outbox_batch_txn(conn, 1, p, 10)])
    assert _tables(conn) == {"outbox": 0, "outbox_events": 0}
    assert queue_depths_txn(conn) == []
    conn.close()


def test_the_admin_view_shows_each_peers_depth_and_oldest_event(tmp_path: Path) -> None:
    conn = pg.direct(tmp_path / "db.sqlite3")
    tenant = create_tenant_txn(conn, "a.test", 0)
    enqueue_txn(conn, tenant.tenant_id, ["b.test", "c.test"], _event("e1"), 100)
    enqueue_txn(conn, tenant.tenant_id, ["c.test"], _event("e2"), 200)
    outbox_done_txn(conn, tenant.tenant_id,
                    [q.id for q in outbox_batch_txn(conn, tenant.tenant_id, "c.test", 1)])
    view = {p["server_name"]: p for p in peers_view_txn(conn, tenant, 0)}
    assert (view["b.test"]["queue_depth"], view["b.test"]["oldest_queued_at"]) == (1, 100)
    assert (view["c.test"]["queue_depth"], view["c.test"]["oldest_queued_at"]) == (1, 200)
    outbox_done_txn(conn, tenant.tenant_id,
                    [q.id for q in outbox_batch_txn(conn, tenant.tenant_id, "c.test", 1)])
    view = {p["server_name"]: p for p in peers_view_txn(conn, tenant, 0)}
    assert "c.test" not in view  # never talked to, nothing queued
    conn.close()


def test_the_backoff_is_read_back_as_it_was_written_and_cleared_by_an_answer(
        tmp_path: Path) -> None:
    """What a restarted sender resumes from (federation.sender): failures and the
    next retry time as the last failure wrote them; none once the peer answered."""
    conn = pg.direct(tmp_path / "db.sqlite3")
    tenant = create_tenant_txn(conn, "a.test", 0)
    assert retry_state_txn(conn, tenant.tenant_id, "b.test") == RetryState()
    peer_failed_txn(conn, tenant.tenant_id, "b.test", 1_000, "SW_FED_PEER_UNREACHABLE: down",
                    3, 9_500)
    assert retry_state_txn(conn, tenant.tenant_id, "b.test") == RetryState(3, 9_500)
    assert retry_state_txn(conn, tenant.tenant_id, "c.test") == RetryState()
    peer_ok_txn(conn, tenant.tenant_id, "b.test", 2_000)
    assert retry_state_txn(conn, tenant.tenant_id, "b.test") == RetryState()
