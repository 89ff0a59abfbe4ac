"""Tenants, users and bearer tokens (sync ``*_txn`` functions; see db.py)."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import attrs

from swfed.core.errors import Conflict, NotFound
from swfed.core.policy import Policy, policy_from_stored
from swfed.storage import files
from swfed.storage.conn import Conn, Row


@attrs.frozen
class Tenant:
    tenant_id: int
    server_name: str
    is_default: bool
    federation_enabled: bool
    policy: Policy


@attrs.frozen
class User:
    tenant_id: int
    local_id: str
    display_name: str
    admin: bool
    server_name: str

    @property
    def fqid(self) -> str:
        return f"@{self.local_id}:{self.server_name}"


def _tenant(row: Row) -> Tenant:
    enabled = bool(row["federation_enabled"])
    return Tenant(row["tenant_id"], row["server_name"], bool(row["is_default"]), enabled,
                  policy_from_stored(json.loads(row["policy"]), enabled))


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return "swt_" + secrets.token_urlsafe(32)


def list_tenants_txn(conn: Conn) -> list[Tenant]:
    return [_tenant(r) for r in conn.execute("SELECT * FROM tenants ORDER BY tenant_id")]


# -- the tenants stamp (swfed.storage.files) -------------------------------------
#
# ``swfed admin tenant create`` bumps it after its commit; the server looks at
# it when a Host it does not know arrives.

TENANTS_STAMP = "tenants.changed"
Stamp = files.Stamp


def bump_tenants_stamp(db_file: Path) -> None:
    """Tell a running server that tenants changed (call after the commit)."""
    files.bump_stamp(db_file, TENANTS_STAMP)


def tenants_stamp_path(db_file: Path) -> str:
    """Where the tenants stamp lives (read it with files.read_stamp_at)."""
    return files.stamp_path(db_file, TENANTS_STAMP)


def tenant_by_name_txn(conn: Conn, server_name: str) -> Tenant | None:
    row = conn.execute("SELECT * FROM tenants WHERE server_name = ?",
                       (server_name,)).fetchone()
    return None if row is None else _tenant(row)


def create_tenant_txn(conn: Conn, server_name: str, now: int, *,
                      is_default: bool = False, federation_enabled: bool = True) -> Tenant:
    """Raises Conflict SW_TENANT_EXISTS."""
    if tenant_by_name_txn(conn, server_name) is not None:
        raise Conflict(f"tenant {server_name} already exists", code="SW_TENANT_EXISTS")
    conn.execute(
        "INSERT INTO tenants (server_name, is_default, federation_enabled, created_at)"
        " VALUES (?, ?, ?, ?)", (server_name, int(is_default), int(federation_enabled), now))
    tenant = tenant_by_name_txn(conn, server_name)
    assert tenant is not None
    return tenant


def ensure_default_tenant_txn(conn: Conn, server_name: str,
                              now: int) -> Tenant:
    """Make the tenant named in the config the default one, creating it if new.

    A tenant that was the default under an earlier name stays, served by its
    own Host name: renaming a server would break every peer's view of it.
    """
    tenant = tenant_by_name_txn(conn, server_name)
    if tenant is None:
        tenant = create_tenant_txn(conn, server_name, now)
    conn.execute("UPDATE tenants SET is_default = CASE WHEN server_name = ? THEN 1 ELSE 0 END",
                 (server_name,))
    found = tenant_by_name_txn(conn, server_name)
    assert found is not None
    return found


def set_policy_txn(conn: Conn, tenant: Tenant, policy: Policy) -> Tenant:
    stored = policy.to_json()
    enabled = stored.pop("federation_enabled")
    conn.execute("UPDATE tenants SET policy = ?, federation_enabled = ? WHERE tenant_id = ?",
                 (json.dumps(stored, sort_keys=True), int(enabled), tenant.tenant_id))
    found = tenant_by_name_txn(conn, tenant.server_name)
    assert found is not None
    return found


def create_user_txn(conn: Conn, tenant: Tenant, local_id: str,
                    display_name: str, admin: bool, now: int) -> str:
    """Create a user and return a new bearer token (only its hash is stored).

    Raises Conflict SW_USER_EXISTS.
    """
    if user_txn(conn, tenant, local_id) is not None:
        raise Conflict(f"user @{local_id} already exists on {tenant.server_name}",
                       code="SW_USER_EXISTS")
    conn.execute(
        "INSERT INTO users (tenant_id, local_id, display_name, admin, created_at)"
        " VALUES (?, ?, ?, ?, ?)", (tenant.tenant_id, local_id, display_name, int(admin), now))
    return issue_token_txn(conn, tenant, local_id, now)


def issue_token_txn(conn: Conn, tenant: Tenant, local_id: str, now: int) -> str:
    if user_txn(conn, tenant, local_id) is None:
        raise NotFound(f"no user @{local_id} on {tenant.server_name}", code="SW_USER_NOT_FOUND")
    token = new_token()
    conn.execute("INSERT INTO tokens (token_hash, tenant_id, local_id, created_at)"
                 " VALUES (?, ?, ?, ?)", (hash_token(token), tenant.tenant_id, local_id, now))
    return token


def _user(row: Row, server_name: str) -> User:
    return User(row["tenant_id"], row["local_id"], row["display_name"], bool(row["admin"]),
                server_name)


def user_txn(conn: Conn, tenant: Tenant, local_id: str) -> User | None:
    row = conn.execute("SELECT * FROM users WHERE tenant_id = ? AND local_id = ?",
                       (tenant.tenant_id, local_id)).fetchone()
    return None if row is None else _user(row, tenant.server_name)


def user_by_token_txn(conn: Conn, tenant: Tenant, token: str) -> User | None:
    """The user a token belongs to, only if it belongs to this tenant."""
    row = conn.execute(
        "SELECT u.* FROM tokens t JOIN users u"
        " ON u.tenant_id = t.tenant_id AND u.local_id = t.local_id"
        " WHERE t.token_hash = ? AND t.tenant_id = ?",
        (hash_token(token), tenant.tenant_id)).fetchone()
    return None if row is None else _user(row, tenant.server_name)
