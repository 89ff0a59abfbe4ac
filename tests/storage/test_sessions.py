"""Who a token is, from memory: right after a logout, a revocation or a CLI change."""

from __future__ import annotations

from pathlib import Path

from swfed.storage import tenants as tenants_db
from swfed.storage.db import run_in_transaction
from swfed.storage.passwords import revoke_token_txn
from swfed.storage.sessions import SessionCache
from tests import pg


async def test_a_token_is_read_once_and_forgotten_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = pg.engine_database(path, read_connections=2)
    await db.start()
    try:
        tenant = await db.write(tenants_db.ensure_default_tenant_txn, "a.test", 0)
        alice = await db.write(tenants_db.create_user_txn, tenant, "alice", "Alice", False, 0)
        bob = await db.write(tenants_db.create_user_txn, tenant, "bob", "Bob", False, 0)
        cache = SessionCache(db)
        for _ in range(3):
            user = await cache.user(tenant, alice, 1)
            assert user is not None and user.local_id == "alice"
        assert (cache.misses, cache.hits) == (1, 2)
        assert await cache.user(tenant, "no-such-token", 1) is None
        # a revocation by this server counts from its commit on
        assert await db.write(revoke_token_txn, tenant, alice)
        assert await cache.user(tenant, alice, 1) is None
        assert (await cache.user(tenant, bob, 1)) is not None
        # the CLI, another process, changes the file: its stamp empties the memory
        conn = pg.reopen(db)
        run_in_transaction(conn, revoke_token_txn, tenant, bob)
        conn.close()
        assert await cache.user(tenant, bob, 1) is None
    finally:
        await db.close()

