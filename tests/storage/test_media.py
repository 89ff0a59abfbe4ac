"""The media tables on a real file: references, first facts kept, release and collection."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from swfed.storage import media as media_db
from swfed.storage.db import open_direct, run_in_transaction
from swfed.storage.media import MediaStore, Upload
from swfed.storage.tenants import create_tenant_txn, list_tenants_txn

SHA = "ab" * 32


def message(event_id: str, origin: str, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return {"event_id": event_id, "room_id": "!room0000:a.test", "type": "message",
            "origin": origin, "sender": f"@x:{origin}", "content": {"attachments": attachments}}


def attachment(media_id: str, sha: str = SHA, size: int = 5) -> dict[str, Any]:
    return {"media_id": media_id, "name": "f", "content_type": "application/pdf",
            "size": size, "sha256": sha}


def test_references_release_and_collection(tmp_path: Path) -> None:
    conn = open_direct(tmp_path / "db.sqlite3")
    run_in_transaction(conn, create_tenant_txn, "a.test", 0)
    (tenant,) = run_in_transaction(conn, list_tenants_txn)
    store = MediaStore(tmp_path / "media")
    store.ensure()

    # an upload of ours, referenced by a message, and a peer's file
    temp = store.temp_path()
    temp.write_bytes(b"hello")
    sha = hashlib.sha256(b"hello").hexdigest()
    run_in_transaction(conn, media_db.add_upload_txn, tenant, store, "@a:a.test",
                       "ours00000000000000000001",
                       Upload(temp, sha, 5, "application/pdf", False), 1000, 100, 100)
    assert store.path(sha).read_bytes() == b"hello" and not temp.exists()
    run_in_transaction(conn, media_db.reference_txn, tenant,
                       message("e1", "a.test", [attachment("ours00000000000000000001", sha)]),
                       1000)
    run_in_transaction(conn, media_db.reference_txn, tenant,
                       message("e2", "b.test", [attachment("peer00000000000000000001")]), 1000)
    peer = run_in_transaction(conn, media_db.media_txn, tenant, "peer00000000000000000001")
    assert peer.origin == "b.test" and not peer.stored and peer.uploader is None
    # another event re-pointing that id at other bytes gives no access and changes nothing
    run_in_transaction(conn, media_db.reference_txn, tenant,
                       message("e3", "evil.test", [attachment("peer00000000000000000001",
                                                              "cd" * 32, 9)]), 1000)
    assert run_in_transaction(conn, media_db.media_txn, tenant,
                              "peer00000000000000000001") == peer
    refs = conn.execute("SELECT event_id FROM sw_media_refs ORDER BY event_id").fetchall()
    assert [r[0] for r in refs] == ["e1", "e2"]

    # nothing collected while referenced
    assert run_in_transaction(conn, media_db.collect_txn, store, 10**12, 100) == 0
    # the messages are deleted (issue 20's delete calls release_event_txn)
    assert run_in_transaction(conn, media_db.release_event_txn, tenant, "e1") == 1
    assert run_in_transaction(conn, media_db.release_event_txn, tenant, "e2") == 1
    # the peer's copy goes at once; our upload only after its grace period
    assert run_in_transaction(conn, media_db.collect_txn, store, 500, 100) == 1
    assert store.path(sha).exists()
    assert run_in_transaction(conn, media_db.collect_txn, store, 2000, 100) == 1
    assert not store.path(sha).exists()
    assert conn.execute("SELECT COUNT(*) FROM sw_media").fetchone()[0] == 0
