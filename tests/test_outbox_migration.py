"""Events queued by a swfed before migration 8 (a payload copy per destination)
are delivered, in order and exactly once, by a server that migrates the file.

a.test queues messages for b.test while b.test is down and stops; its file is
then put back in the migration-7 layout (the rows' ids, bytes and times kept;
every other row in an older swfed's ``json.dumps`` form). a.test starts again
and migrates, b.test comes back, and gets every message in order.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from swfed.storage.migrations import MIGRATIONS
from tests.conftest import bearer, peer_row
from tests.harness import wait_for
from tests.test_federation_delivery import (
    _equals,
    clients,
    dm_queued_while_b_is_down,
    history,
    setup_pair,
)

# what migration 9 added (a unique room index, an index of refusals), undone
_BACK_TO_V8 = """
DROP TABLE read_markers;
DROP INDEX notifications_by_seen;
ALTER TABLE notifications DROP COLUMN seen_pos;
ALTER TABLE notifications DROP COLUMN seen;
DROP INDEX fed_rejected_by_event;
DROP INDEX events_by_room;
CREATE INDEX events_by_room ON events(tenant_id, room_id, seq);
PRAGMA user_version = 8;
"""

_BACK_TO_V7 = """
CREATE TABLE outbox_v7 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL,
    destination TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    room_id     TEXT,
    canonical   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_v7 (id, tenant_id, destination, event_id, payload, created_at, room_id,
                       canonical)
    SELECT o.id, o.tenant_id, o.destination, e.event_id, CAST(e.payload AS TEXT), e.created_at,
           e.room_id, 1 FROM outbox o JOIN outbox_events e ON e.id = o.event;
DROP TABLE outbox;
DROP TABLE outbox_events;
ALTER TABLE outbox_v7 RENAME TO outbox;
CREATE INDEX outbox_by_destination ON outbox(tenant_id, destination, id);
PRAGMA user_version = 7;
"""


#: What the migrations after 10 made (they run again after _back_to_v7).
_AFTER_V10 = """
DROP TABLE IF EXISTS sw_media_refs;
DROP TABLE IF EXISTS sw_media;
"""


def _back_to_v7(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1][0]
        # the migrations after 10 only add tables: dropped, they run again
        conn.executescript(_AFTER_V10)
        # migration 10 (invites keyed by room) rebuilds its table from whatever is
        # there, so it runs again as it is; migration 11's read state and 9's index
        # are undone
        conn.executescript(_BACK_TO_V8)
        conn.executescript(_BACK_TO_V7)
        rows = conn.execute("SELECT id, payload FROM outbox ORDER BY id").fetchall()
        for row_id, payload in rows[::2]:  # as swfed wrote them before migration 7
            conn.execute("UPDATE outbox SET payload = ?, canonical = 0 WHERE id = ?",
                         (json.dumps(json.loads(payload), ensure_ascii=False, indent=1),
                          row_id))
        conn.commit()
        return len(rows)
    finally:
        conn.close()


async def test_rows_queued_before_migration_8_are_delivered_after_it(tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            room_id = await dm_queued_while_b_is_down(ca, cb, tokens, b, "queued", 30)

            async def queued() -> bool:
                row = await peer_row(ca, tokens["admin_a"], "b.test")
                return row["queue_depth"] == 30

            await wait_for(queued, what="a queueing 30 for b")
            assert a.stop() == 0
        db = tmp_path / "a.test" / "data" / "swfed.sqlite3"
        assert _back_to_v7(db) == 30

        # b.test stays down until the migrated queue has been looked at: nothing can
        # drain it before the check (a b.test started at once may already have it all)
        a.start()
        ca, cb = clients(net, a, b)
        async with ca, cb:
            row = await peer_row(ca, tokens["admin_a"], "b.test")
            assert row["queue_depth"] == 30 and row["oldest_queued_at"] is not None
            b.start()
            r = await ca.post("/v1/admin/federation/peers/b.test/retry",
                              headers=bearer(tokens["admin_a"]))
            assert r.status_code == 200
            expected = [f"queued {i}" for i in range(30)]
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), expected),
                           timeout=60, what="all 30 on b, in order")

            async def drained() -> bool:
                return (await peer_row(ca, tokens["admin_a"], "b.test"))["queue_depth"] == 0

            await wait_for(drained, what="a's queue for b empty")
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1][0]
            assert conn.execute("SELECT COUNT(*) FROM outbox_events").fetchone()[0] == 0
        finally:
            conn.close()
    finally:
        a.kill()
        b.kill()
