"""The commit hook wakes exactly what a commit touched (swfed.storage.touched).

A real SQLite file and the real writer: the hook sees the peers that got
outbox rows and the tenants whose stream moved, only for writes that were
stored; a write that failed (rolled back to its savepoint) touches nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from swfed.app import Notifier
from swfed.storage import peers as peers_db
from swfed.storage.stream import take_positions_txn
from swfed.storage.tenants import Tenant, create_tenant_txn
from swfed.storage.touched import Touched
from tests import pg


def queue_and_move(conn: Any, tenant: Tenant, destinations: list[str]) -> None:
    peers_db.enqueue_txn(conn, tenant.tenant_id, destinations,
                         {"event_id": f"e-{tenant.tenant_id}-{destinations}", "room_id": "!r"},
                         0)
    take_positions_txn(conn, tenant, 1)


def move_then_fail(conn: Any, tenant: Tenant) -> None:
    take_positions_txn(conn, tenant, 1)
    peers_db.enqueue_txn(conn, tenant.tenant_id, ["never.test"], {"event_id": "x"}, 0)
    raise ValueError("changes its mind")


async def test_the_hook_sees_what_stored_writes_touched(tmp_path: Path) -> None:
    db = pg.engine_database(tmp_path / "db.sqlite3")
    seen: list[Touched] = []
    db.on_commit(seen.append)
    await db.start()
    try:
        a = await db.write(create_tenant_txn, "a.test", 0)
        b = await db.write(create_tenant_txn, "b.test", 0)
        assert seen == []  # nothing for anyone to act on: no hook call
        await db.write(queue_and_move, a, ["x.test", "y.test"])
        assert seen[-1] == Touched(peers={(a.tenant_id, "x.test"), (a.tenant_id, "y.test")},
                                   streams={a.tenant_id})
        seen.clear()

        async def failing() -> None:
            try:
                await db.write(move_then_fail, b)
            except ValueError:
                pass

        async with trio.open_nursery() as nursery:  # one group commit, most likely
            nursery.start_soon(failing)
            nursery.start_soon(db.write, queue_and_move, b, ["z.test"])
        merged = Touched()
        for touched in seen:
            merged.update(touched)
        assert merged == Touched(peers={(b.tenant_id, "z.test")}, streams={b.tenant_id})
    finally:
        await db.close()


async def test_a_tenants_commit_wakes_only_its_own_streams(tmp_path: Path) -> None:
    db = pg.engine_database(tmp_path / "db.sqlite3")
    notifier = Notifier()
    db.on_commit(notifier.committed)
    await db.start()
    try:
        a = await db.write(create_tenant_txn, "a.test", 0)
        b = await db.write(create_tenant_txn, "b.test", 0)
        wait_a, wait_b = notifier.current(a.tenant_id), notifier.current(b.tenant_id)
        await db.write(take_positions_txn, a, 1)
        assert wait_a.is_set() and not wait_b.is_set()
        assert not notifier.current(a.tenant_id).is_set()  # a fresh one for the next wait
    finally:
        await db.close()
