"""Peers' keys we cached: retired keys are kept, even when a descriptor drops them."""

from __future__ import annotations

from pathlib import Path

from swfed.storage.db import run_in_transaction
from swfed.storage.keys import peer_keys_txn, store_peer_keys_txn
from swfed.storage.tenants import ensure_default_tenant_txn
from tests import pg


def test_keys_a_descriptor_drops_stay_known(tmp_path: Path) -> None:
    conn = pg.direct(tmp_path / "db.sqlite3")
    me = run_in_transaction(conn, ensure_default_tenant_txn, "me.test", 0)

    def store(now: int, *keys: dict[str, object]) -> list[tuple[str, int | None, int | None]]:
        run_in_transaction(conn, store_peer_keys_txn, me, "peer.test", list(keys), "{}", now)
        return [(k.key_id, k.retired_at, k.expires_at)
                for k in peer_keys_txn(conn, me, "peer.test")]

    k1 = {"key_id": "ed25519:k1", "public_key": "AAAA"}
    assert store(10, k1) == [("ed25519:k1", None, None)]
    k1_retired = {**k1, "retired_at": 100, "expires_at": 200}
    k2 = {"key_id": "ed25519:k2", "public_key": "BBBB"}
    assert store(150, k2, k1_retired) == [("ed25519:k2", None, None),
                                          ("ed25519:k1", 100, 200)]
    # a peer on an older release dropped k1; then it lost k2 without listing it
    k3 = {"key_id": "ed25519:k3", "public_key": "CCCC"}
    assert store(500, k3) == [("ed25519:k3", None, None),
                              ("ed25519:k2", 500, 500),   # retired when we saw it gone
                              ("ed25519:k1", 100, 200)]   # kept as it was
