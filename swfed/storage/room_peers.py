"""Which peers each tenant shares a room with (sync ``*_txn``; see db.py).

Read by the come-back announcer (swfed.federation.announce) when the server
starts: the servers of foreign members who joined our rooms, and the hosts
of rooms hosted elsewhere that we know.
"""

from __future__ import annotations

from swfed.storage.conn import Conn


def room_peers_txn(conn: Conn) -> list[tuple[int, str]]:
    """(tenant_id, server_name) of every peer a tenant shares a room with, sorted."""
    peers = {(int(r[0]), str(r[1]).partition(":")[2]) for r in conn.execute(
        "SELECT DISTINCT m.tenant_id, m.member FROM members m"
        " WHERE m.foreign_ = 1 AND m.membership = 'join'")}
    peers.update((int(r[0]), str(r[1])) for r in conn.execute(
        "SELECT DISTINCT r.tenant_id, r.host FROM rooms r"
        " JOIN tenants t ON t.tenant_id = r.tenant_id WHERE r.host != t.server_name"))
    return sorted(p for p in peers if p[1])
