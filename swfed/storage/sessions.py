"""Who a bearer token is, remembered while nothing could have changed it.

Every API request names its caller by token; reading that from SQLite on a
worker thread cost more than the rest of a small request. So the server keeps
the answer -- the user, and when a login session expires -- for tokens it has
seen, tagged with the database's ``auth_version`` (migration 7): triggers move
that number whenever a token, a login session or a user changes or goes, and
the writer publishes it after each commit (``Database.auth_version``). An
entry is used only while its tag is the published number, so a logout or a
revocation by this server counts from its commit on. The CLI writes the file
from another process: its commit bumps the ``sessions.changed`` stamp, and
a changed stamp empties the memory (one ``stat()`` per lookup).

Unknown tokens are not remembered, and a token the database no longer knows
is forgotten. :meth:`SessionCache.known` says whether a token is in memory
(whatever its tag): ``swfed.api.common`` charges lookups of the others to the
client's address, so a flood of made-up tokens is limited before it reaches
the database while tokens seen before go straight through. The memory holds at
most :data:`MAX_ENTRIES`, keyed by the token's hash as the database is.
"""

from __future__ import annotations

from swfed.storage.conn import Conn
from swfed.storage.db import SESSIONS_STAMP, Database, auth_version_txn
from swfed.storage.files import Stamp, read_stamp_at, stamp_path
from swfed.storage.tenants import Tenant, User, hash_token, user_by_token_txn

MAX_ENTRIES = 10_000

#: (auth_version read with it, the user, the session's expiry or None)
Entry = tuple[int, User, int | None]


def token_user_txn(conn: Conn, tenant: Tenant, token: str) -> Entry | None:
    """The user of a token and its login session's expiry, with the auth_version read."""
    user = user_by_token_txn(conn, tenant, token)
    if user is None:
        return None
    row = conn.execute("SELECT expires_at FROM login_sessions WHERE token_hash = ?",
                       (hash_token(token),)).fetchone()
    return auth_version_txn(conn), user, None if row is None else int(row[0])


class SessionCache:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._entries: dict[tuple[int, bytes], Entry] = {}
        self._stamp_path = stamp_path(db.path, SESSIONS_STAMP)
        self._stamp: Stamp = read_stamp_at(self._stamp_path)
        #: Lookups answered from memory and from the database (tests, bench).
        self.hits = 0
        self.misses = 0

    def known(self, tenant: Tenant, token: str) -> bool:
        """Whether this token was found before and is still remembered (no I/O)."""
        return (tenant.tenant_id, hash_token(token)) in self._entries

    async def user(self, tenant: Tenant, token: str, now: int) -> User | None:
        """The token's user, unless unknown or its login session has expired."""
        stamp = read_stamp_at(self._stamp_path)
        if stamp != self._stamp:
            self._entries.clear()
            self._stamp = stamp
        key = (tenant.tenant_id, hash_token(token))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == self._db.auth_version:
            self.hits += 1
        else:
            self.misses += 1
            entry = await self._db.read(token_user_txn, tenant, token)
            if entry is None:
                self._entries.pop(key, None)  # revoked: no longer a token we know
                return None
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = entry
        _, user, expires_at = entry
        if expires_at is not None and expires_at <= now:
            return None  # logging in again replaces it; expired rows go at the next login
        return user
