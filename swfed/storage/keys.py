"""Our signing keys and the peers' public keys (sync ``*_txn`` functions).

Private seeds never leave this table except into a
:class:`~swfed.core.signing.KeyPair` in memory; they are never logged.
Neither our retired keys nor a peer's are ever deleted: events they signed
can be asked for at any time (rules: swfed.core.keys).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from swfed.core.errors import Conflict, NotFound
from swfed.core.keys import KeyInfo, retire
from swfed.core.signing import KeyPair, generate_keypair, keypair_from_seed
from swfed.storage.audit import audit_txn
from swfed.storage.conn import Conn, Row
from swfed.storage.tenants import Tenant


@attrs.frozen
class OwnKey:
    key_id: str
    public_key: str  # unpadded base64
    seed: bytes | None = attrs.field(repr=False)
    created_at: int
    retired_at: int | None
    expires_at: int | None


def _own(row: Row) -> OwnKey:
    return OwnKey(row["key_id"], row["public_key"], row["seed"], row["created_at"],
                  row["retired_at"], row["expires_at"])


def own_keys_txn(conn: Conn, tenant: Tenant) -> list[OwnKey]:
    """All our keys, current (retired_at NULL) first, then newest retired."""
    rows = conn.execute(
        "SELECT * FROM signing_keys WHERE tenant_id = ?"
        " ORDER BY retired_at IS NOT NULL, created_at DESC", (tenant.tenant_id,)).fetchall()
    return [_own(r) for r in rows]


def add_key_txn(conn: Conn, tenant: Tenant, key_id: str, seed: bytes,
                public_key: str, now: int, overlap_days: int) -> None:
    """Make a new current key; the previous one retires now, its overlap ends later.

    Retired rows are never deleted: their public half stays published.
    """
    retired_at, expires_at = retire(now, overlap_days)
    conn.execute(
        "UPDATE signing_keys SET retired_at = ?, expires_at = ? WHERE tenant_id = ?"
        " AND retired_at IS NULL", (retired_at, expires_at, tenant.tenant_id))
    conn.execute(
        "INSERT INTO signing_keys (tenant_id, key_id, seed, public_key, created_at)"
        " VALUES (?, ?, ?, ?, ?)", (tenant.tenant_id, key_id, seed, public_key, now))


def wipe_expired_seeds_txn(conn: Conn, now: int) -> int:
    """Drop the private half of keys whose overlap has ended (core.keys.seed_expired);
    the public half stays, published for good."""
    cur = conn.execute("UPDATE signing_keys SET seed = NULL WHERE seed IS NOT NULL"
                       " AND expires_at IS NOT NULL AND expires_at <= ?", (now,))
    return cur.rowcount


@attrs.frozen
class TenantKeys:
    current: KeyPair | None
    current_created_at: int | None
    old: tuple[KeyInfo, ...]


def load_tenant_keys_txn(conn: Conn, tenant: Tenant) -> TenantKeys:
    """The tenant's current key pair (seed in memory only) and its retired keys."""
    current: KeyPair | None = None
    created: int | None = None
    old: list[KeyInfo] = []
    for k in own_keys_txn(conn, tenant):
        if k.retired_at is None and k.seed is not None and current is None:
            current = keypair_from_seed(k.seed, k.key_id)
            created = k.created_at
        elif k.retired_at is not None:
            old.append(KeyInfo(k.key_id, k.public_key, k.retired_at, k.expires_at))
    return TenantKeys(current, created, tuple(old))


def new_key_txn(conn: Conn, tenant: Tenant, now: int, overlap_days: int, *,
                rotate: bool, actor: str) -> KeyPair:
    """Generate a key (``rotate``: retire the current one). Raises SW_KEY_EXISTS/SW_NO_KEY."""
    has_current = load_tenant_keys_txn(conn, tenant).current is not None
    if has_current and not rotate:
        raise Conflict(f"{tenant.server_name} already has a federation key: use "
                       "'swfed admin federation key rotate' to replace it", code="SW_KEY_EXISTS")
    if rotate and not has_current:
        raise NotFound(f"{tenant.server_name} has no federation key to rotate: use "
                       "'swfed admin federation key generate'", code="SW_NO_KEY")
    keypair = generate_keypair()
    add_key_txn(conn, tenant, keypair.key_id, keypair.seed, keypair.public_key_b64,
                        now, overlap_days)
    audit_txn(conn, tenant, "federation.key." + ("rotate" if rotate else "generate"), now,
              actor=actor, outcome="ok", details={"key_id": keypair.key_id})
    return keypair


# -- peers' keys ---------------------------------------------------------------


@attrs.frozen
class PeerKey:
    server_name: str
    key_id: str
    public_key: str
    retired_at: int | None
    expires_at: int | None
    fetched_at: int


def peer_keys_txn(conn: Conn, tenant: Tenant, server_name: str) -> list[PeerKey]:
    """A peer's keys as we know them: the current one first, then newest retired."""
    rows = conn.execute("SELECT * FROM peer_keys WHERE tenant_id = ? AND server_name = ?"
                        " ORDER BY retired_at IS NOT NULL, retired_at DESC",
                        (tenant.tenant_id, server_name)).fetchall()
    return [PeerKey(r["server_name"], r["key_id"], r["public_key"], r["retired_at"],
                    r["expires_at"], r["fetched_at"]) for r in rows]


def cached_peer_txn(conn: Conn, tenant: Tenant,
                    server_name: str) -> tuple[list[PeerKey], int | None]:
    """A peer's keys and its cached descriptor's ``valid_until``, in one read."""
    return (peer_keys_txn(conn, tenant, server_name),
            descriptor_valid_until_txn(conn, tenant, server_name))


def descriptor_valid_until_txn(conn: Conn, tenant: Tenant,
                               server_name: str) -> int | None:
    """Until when the peer's cached descriptor says it may be used (None: unknown)."""
    row = conn.execute("SELECT descriptor FROM peers WHERE tenant_id = ? AND server_name = ?",
                       (tenant.tenant_id, server_name)).fetchone()
    if row is None or not row[0]:
        return None
    value = json.loads(row[0]).get("valid_until")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def store_peer_keys_txn(conn: Conn, tenant: Tenant, server_name: str,
                        keys: list[dict[str, Any]], descriptor_json: str, now: int) -> None:
    """Remember a verified descriptor and the keys it lists.

    Keys it lists replace what we knew of them. A key we knew that it no longer
    lists is kept (a peer on an older release drops retired keys a year after
    their overlap; the events they signed must stay verifiable): if it was its
    current key, it counts as retired now, without an overlap.
    """
    listed = [k["key_id"] for k in keys]
    marks = ",".join("?" * len(listed)) or "''"
    conn.execute(
        "UPDATE peer_keys SET retired_at = ?, expires_at = ? WHERE tenant_id = ?"
        f" AND server_name = ? AND retired_at IS NULL AND key_id NOT IN ({marks})",
        (now, now, tenant.tenant_id, server_name, *listed))
    conn.execute(f"DELETE FROM peer_keys WHERE tenant_id = ? AND server_name = ?"
                 f" AND key_id IN ({marks})", (tenant.tenant_id, server_name, *listed))
    for k in keys:
        conn.execute(
            "INSERT INTO peer_keys (tenant_id, server_name, key_id, public_key, retired_at,"
            " expires_at, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant.tenant_id, server_name, k["key_id"], k["public_key"], k.get("retired_at"),
             k.get("expires_at"), now))
    conn.execute(
        "INSERT INTO peers (tenant_id, server_name, descriptor, fetched_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tenant_id, server_name) DO UPDATE SET descriptor = excluded.descriptor,"
        " fetched_at = excluded.fetched_at",
        (tenant.tenant_id, server_name, descriptor_json, now))


def doctor_facts_txn(conn: Conn, tenant: Tenant, peer: str, now: int
                     ) -> tuple[TenantKeys, list[PeerKey], dict[str, Any] | None]:
    """What ``swfed doctor`` reads before it goes on the network: our keys, the peer's
    keys as we know them, and the peer's row of the peers view (None: never met)."""
    from swfed.storage.peers import peers_view_txn

    rows = [r for r in peers_view_txn(conn, tenant, now) if r["server_name"] == peer]
    return (load_tenant_keys_txn(conn, tenant), peer_keys_txn(conn, tenant, peer),
            rows[0] if rows else None)


def has_peer_keys_txn(conn: Conn, tenant: Tenant, server_name: str) -> bool:
    return conn.execute("SELECT 1 FROM peer_keys WHERE tenant_id = ? AND server_name = ?"
                        " LIMIT 1", (tenant.tenant_id, server_name)).fetchone() is not None
