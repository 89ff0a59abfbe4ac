"""A /send's run of plain relayed events is stored together: the same as one by one.

``receive_batch_txn`` stores the leading events that only add to a room's
history in a few statements (storage.room_writes._plain_run). What it leaves
must be exactly what taking each event on its own leaves: the same rows,
stream positions, search entries, synced mark, notifications, answers and
gap repairs. Both ways run here on real files, side by side.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from swfed.core.rooms import Room
from swfed.storage import members as members_db
from swfed.storage import rooms as rooms_db
from swfed.storage.context import Ctx
from swfed.storage.room_writes import receive_batch_txn
from swfed.storage.search import search_txn
from swfed.storage.tenants import Tenant, create_tenant_txn, create_user_txn
from swfed.storage.touched import Touched
from tests import pg

ROOM = "!AbcdefghijklmnopqR:a.test"
NOW = 1_700_000_000_000


def copy_of_room(path: Path) -> tuple[sqlite3.Connection, Tenant]:
    """b.test's copy of a room hosted by a.test, synced up to host seq 5; bob joined."""
    conn = pg.direct(path)
    conn.execute("BEGIN")
    tenant = create_tenant_txn(conn, "b.test", NOW)
    create_user_txn(conn, tenant, "bob", "Bob", False, NOW)
    rooms_db.insert_room_txn(conn, tenant, Room(ROOM, "r", "group", True, "a.test",
                                                "@alice:a.test", NOW, True))
    rooms_db.set_synced_txn(conn, tenant, ROOM, 5)
    members_db.set_membership_txn(conn, tenant, ROOM, "@bob:b.test", "join", NOW)
    members_db.set_membership_txn(conn, tenant, ROOM, "@alice:a.test", "join", NOW)
    conn.execute("COMMIT")
    return conn, tenant


def message(n: int, seq: int, **content: Any) -> dict[str, Any]:
    return {"event_id": f"00000000-0000-4000-8000-{n:012d}", "room_id": ROOM,
            "type": "message", "sender": "@alice:a.test", "origin": "a.test",
            "origin_ts": NOW + n, "content": {"body": f"hello {n}", **content},
            "signatures": {"a.test": {"ed25519:k1": "sig"}}, "unsigned": {"seq": seq}}


def receive(conn: sqlite3.Connection, tenant: Tenant, events: list[dict[str, Any]],
            *, one_by_one: bool) -> tuple[dict[str, Any], list[str], set[str]]:
    results: dict[str, Any] = {}
    refused: list[str] = []
    repairs: set[str] = set()
    for batch in ([[e] for e in events] if one_by_one else [events]):
        ctx = Ctx(tenant, NOW)
        conn.touched = Touched()
        conn.execute("BEGIN")
        late = receive_batch_txn(conn, ctx, "a.test", batch, [], results)
        conn.execute("COMMIT")
        refused += [f"{key} {exc.code}" for key, _, exc in late]
        repairs |= {room_id for _, room_id in conn.touched.repairs}
    return results, refused, repairs


def copy(conn: sqlite3.Connection, tenant: Tenant) -> dict[str, Any]:
    """All that the receive left, as users and peers see it."""
    return {
        "events": [tuple(r) for r in conn.execute(
            "SELECT pos, room_id, event_id, seq, type, sender, origin, origin_ts, content,"
            " signed, status, applied FROM events ORDER BY pos")],
        "synced": rooms_db.room_txn(conn, tenant, ROOM).synced_seq,  # type: ignore[union-attr]
        "search": [e["event_id"] for e in search_txn(conn, tenant, "@bob:b.test", "hello",
                                                     100)],
        "notifications": [tuple(r) for r in conn.execute(
            "SELECT local_id, type, sender, pos FROM notifications ORDER BY pos")],
        "stream_pos": conn.execute("SELECT stream_pos FROM tenants").fetchone()[0],
    }


BATCHES = {
    "plain run": [message(i, 5 + i) for i in range(1, 11)],
    "run, a mention, run again": [
        *(message(i, 5 + i) for i in range(1, 4)),
        message(4, 9, mentions=["@bob:b.test"]),
        *(message(i, 5 + i) for i in range(5, 8))],
    "run, then a gap": [message(1, 6), message(2, 7), message(3, 9), message(4, 10)],
    "starts past a gap": [message(1, 7), message(2, 8)],
    "a replay inside": [message(1, 6), message(2, 7), message(1, 6), message(3, 8)],
    "a conflict inside": [message(1, 6), message(2, 7), {**message(9, 8), "event_id":
                                                        message(1, 6)["event_id"]}],
    "a seq out of range": [message(1, 6), message(2, 2**41)],
    "not relayed by the host": [{**message(1, 6), "room_id": "!AbcdefghijklmnopqR:c.test"},
                                message(2, 6)],
    "another room after the run": [message(1, 6), message(2, 7),
                                   {**message(3, 1), "room_id": "!ZbcdefghijklmnopqR:a.test"}],
}


@pytest.mark.parametrize("name", list(BATCHES))
def test_a_batch_leaves_what_one_by_one_leaves(tmp_path: Path, name: str) -> None:
    events = BATCHES[name]
    together, tenant = copy_of_room(tmp_path / "together.sqlite3")
    alone, tenant2 = copy_of_room(tmp_path / "alone.sqlite3")
    got = receive(together, tenant, events, one_by_one=False)
    want = receive(alone, tenant2, events, one_by_one=True)
    assert got == want
    assert copy(together, tenant) == copy(alone, tenant2)
    together.close()
    alone.close()


def test_a_plain_run_is_stored_and_found(tmp_path: Path) -> None:
    conn, tenant = copy_of_room(tmp_path / "db.sqlite3")
    results, refused, repairs = receive(conn, tenant, BATCHES["plain run"], one_by_one=False)
    assert results == {e["event_id"]: {} for e in BATCHES["plain run"]}
    assert not refused and not repairs
    seen = copy(conn, tenant)
    assert seen["synced"] == 15 and len(seen["search"]) == 10
    assert [r[3] for r in seen["events"]] == list(range(6, 16))
    conn.close()
