"""People's passwords (Argon2id hashes) and the session tokens a login issues.

Sync ``*_txn`` functions, run by :class:`swfed.storage.db.Database` or the
CLI's direct connection. Hashing and verifying are slow on purpose (that is
Argon2's job), so callers run them *outside* a transaction and off the event
loop: :func:`hash_password` before :func:`set_password_txn`,
:func:`verify_password` after :func:`password_hash_txn`.

A login issues an ordinary bearer token (``tokens`` table, stored hashed)
with a row in ``login_sessions`` that makes it expire after
:data:`SESSION_DAYS`; the web client keeps it in an HttpOnly cookie.
Logging out deletes that one token; setting a new password ends every
login session of the user (tokens made by the CLI for API clients stay).
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from swfed.core.errors import BadRequest, NotFound
from swfed.storage.conn import Conn
from swfed.storage.tenants import (
    Tenant,
    create_user_txn,
    hash_token,
    issue_token_txn,
    user_txn,
)

MIN_PASSWORD_CHARS = 8
#: A login session (and its cookie) lasts this long.
SESSION_DAYS = 30
SESSION_MS = SESSION_DAYS * 24 * 3600 * 1000
MAX_PASSWORD_CHARS = 1024

#: argon2-cffi's defaults are RFC 9106's "low memory" profile (Argon2id,
#: t=3, m=64 MiB, p=4): about 50 ms here, affordable for a login.
_hasher = PasswordHasher()
#: What one hash or verification holds while it runs, in KiB (64 MiB): the
#: login sizes how many run at once by it (swfed.core.login.verification_slots).
ARGON2_MEMORY_KIB: int = _hasher.memory_cost


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user has no password, so that an unknown name
    costs as long as a wrong password and timing tells nothing."""
    return _hasher.hash("swfed: no such user, constant-time path")


def check_password(password: object, field: str = "password") -> str:
    """A new password's shape; raises BadRequest SW_BAD_PASSWORD."""
    if not isinstance(password, str):
        raise BadRequest(f"{field}: expected a string", code="SW_BAD_PASSWORD")
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"{field}: use at least {MIN_PASSWORD_CHARS} characters",
                         code="SW_BAD_PASSWORD")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadRequest(f"{field}: at most {MAX_PASSWORD_CHARS} characters",
                         code="SW_BAD_PASSWORD")
    return password


def hash_password(password: str) -> str:
    """An Argon2id PHC string (salted) for a checked password. Slow: off the loop."""
    return _hasher.hash(check_password(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; a missing hash costs the same."""
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def set_password_txn(conn: Conn, tenant: Tenant, local_id: str,
                     password_hash: str, now: int, *, end_sessions: bool = True) -> None:
    """Store (or replace) a user's password hash and, by default, end their login
    sessions (a changed password signs out every browser). SW_USER_NOT_FOUND."""
    if user_txn(conn, tenant, local_id) is None:
        raise NotFound(f"no user @{local_id} on {tenant.server_name}", code="SW_USER_NOT_FOUND")
    if end_sessions:
        conn.execute("DELETE FROM tokens WHERE token_hash IN (SELECT token_hash FROM"
                     " login_sessions WHERE tenant_id = ? AND local_id = ?)",
                     (tenant.tenant_id, local_id))
        conn.execute("DELETE FROM login_sessions WHERE tenant_id = ? AND local_id = ?",
                     (tenant.tenant_id, local_id))
    conn.execute(
        "INSERT INTO passwords (tenant_id, local_id, hash, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tenant_id, local_id) DO UPDATE SET hash = excluded.hash,"
        " updated_at = excluded.updated_at",
        (tenant.tenant_id, local_id, password_hash, now))


def password_hash_txn(conn: Conn, tenant: Tenant, local_id: str) -> str | None:
    """The stored hash, or None when the user or their password does not exist."""
    row = conn.execute("SELECT hash FROM passwords WHERE tenant_id = ? AND local_id = ?",
                       (tenant.tenant_id, local_id)).fetchone()
    return None if row is None else str(row[0])


def login_txn(conn: Conn, tenant: Tenant, local_id: str, now: int,
              rehashed: str | None = None) -> str:
    """Issue a session token after a verified password (and store a fresher hash).

    The user's expired sessions go first, so they never pile up.
    """
    prune_sessions_txn(conn, tenant, local_id, now)
    if rehashed is not None:
        set_password_txn(conn, tenant, local_id, rehashed, now, end_sessions=False)
    token = issue_token_txn(conn, tenant, local_id, now)
    conn.execute("INSERT INTO login_sessions (token_hash, tenant_id, local_id, created_at,"
                 " expires_at) VALUES (?, ?, ?, ?, ?)",
                 (hash_token(token), tenant.tenant_id, local_id, now, now + SESSION_MS))
    return token


def create_user_with_password_txn(conn: Conn, tenant: Tenant, local_id: str,
                                  display_name: str, admin: bool, password_hash: str,
                                  now: int) -> str:
    """A new user with a password, in one transaction; returns a bearer token.

    Raises SW_USER_EXISTS.
    """
    token = create_user_txn(conn, tenant, local_id, display_name, admin, now)
    set_password_txn(conn, tenant, local_id, password_hash, now, end_sessions=False)
    return token


def revoke_token_txn(conn: Conn, tenant: Tenant, token: str) -> bool:
    """Delete one token of this tenant (and its login session); whether it existed."""
    cur = conn.execute("DELETE FROM tokens WHERE token_hash = ? AND tenant_id = ?",
                       (hash_token(token), tenant.tenant_id))
    conn.execute("DELETE FROM login_sessions WHERE token_hash = ? AND tenant_id = ?",
                 (hash_token(token), tenant.tenant_id))
    return cur.rowcount > 0


def prune_sessions_txn(conn: Conn, tenant: Tenant, local_id: str,
                       now: int) -> None:
    """Drop a user's expired login sessions and their tokens."""
    conn.execute("DELETE FROM tokens WHERE token_hash IN (SELECT token_hash FROM login_sessions"
                 " WHERE tenant_id = ? AND local_id = ? AND expires_at <= ?)",
                 (tenant.tenant_id, local_id, now))
    conn.execute("DELETE FROM login_sessions WHERE tenant_id = ? AND local_id = ?"
                 " AND expires_at <= ?", (tenant.tenant_id, local_id, now))
