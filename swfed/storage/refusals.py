"""Which peer names a tenant knows (sync ``*_txn``), for refusals that must stay bounded.

A federation request refused before its origin is verified names an origin
anyone can make up. It is stored (``fed_rejected``, ``sw_audit``) and given a
metric series only when that name is one we already know: a row of our
``peers`` table, or a name in the tenant's ``allowed_peers``/``denied_peers``.
Everything else is counted by reason (see ``swfed.federation.inbound``).
"""

from __future__ import annotations

from swfed.storage.conn import Conn
from swfed.storage.tenants import Tenant


def known_peer_txn(conn: Conn, tenant: Tenant, server_name: str) -> bool:
    if server_name in tenant.policy.allowed_peers or server_name in tenant.policy.denied_peers:
        return True
    row = conn.execute("SELECT 1 FROM peers WHERE tenant_id = ? AND server_name = ?",
                       (tenant.tenant_id, server_name)).fetchone()
    return row is not None
