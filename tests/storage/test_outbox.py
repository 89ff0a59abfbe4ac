"""The outbox on a real file: what the sender joins into a /send body."""

from __future__ import annotations

from pathlib import Path

from swfed.storage.db import open_direct


def test_rows_queued_by_an_older_swfed_are_sent_as_canonical_json(tmp_path: Path) -> None:
    """Before migration 7 the outbox held json.dumps text; the /send body is joined
    from the rows' bytes and signed as they are, so old rows are re-encoded."""
    import json

    from swfed.core.canonical import encode_canonical_json
    from swfed.storage.peers import enqueue_txn, outbox_batch_txn

    conn = open_direct(tmp_path / "db.sqlite3")
    event = {"room_id": "!r:a.test", "event_id": "e1", "content": {"body": "é"}, "type": "x"}
    conn.execute("INSERT INTO outbox (tenant_id, destination, event_id, room_id, payload,"
                 " created_at) VALUES (1, 'b.test', 'e1', NULL, ?, 0)",
                 (json.dumps(event, ensure_ascii=False),))
    enqueue_txn(conn, 1, ["b.test", "c.test"], {**event, "event_id": "e2"}, 0)
    queued = outbox_batch_txn(conn, 1, "b.test", 10)
    assert [q.event_id for q in queued] == ["e1", "e2"]
    assert queued[0].raw == encode_canonical_json(event) and queued[0].room_id == "!r:a.test"
    assert queued[1].raw == encode_canonical_json({**event, "event_id": "e2"})
    assert [q.event_id for q in outbox_batch_txn(conn, 1, "c.test", 10)] == ["e2"]
    conn.close()
