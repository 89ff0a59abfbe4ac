"""Numbered schema migrations, applied at start (server and CLI alike).

On SQLite the schema version lives in ``PRAGMA user_version``; on
PostgreSQL in the ``swfed_schema`` table (:func:`migrate_pg`, below: one
baseline for versions 1-10, then the same list). Each SQLite migration runs in
its own ``BEGIN IMMEDIATE`` transaction and re-reads the version inside it, so
a CLI command and a starting server never apply the same step twice. Never
edit a migration that has shipped: add the next number.

Conventions: every table that holds tenant data has ``tenant_id`` in its key,
and every query filters on it: tenants of one process never read each
other's rows. Times are integer milliseconds since the epoch.
"""

from __future__ import annotations

import re
import sqlite3

from swfed.storage.conn import Conn

_V1 = """
CREATE TABLE tenants (
    tenant_id          INTEGER PRIMARY KEY,
    server_name        TEXT NOT NULL UNIQUE,
    is_default         INTEGER NOT NULL DEFAULT 0,
    federation_enabled INTEGER NOT NULL DEFAULT 1,
    policy             TEXT NOT NULL DEFAULT '{}',
    stream_pos         INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL
);

CREATE TABLE users (
    tenant_id    INTEGER NOT NULL REFERENCES tenants(tenant_id),
    local_id     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    admin        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, local_id)
);

-- Bearer tokens, stored as SHA-256 of the token: a leaked file leaks no token.
CREATE TABLE tokens (
    token_hash BLOB PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    local_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, local_id) REFERENCES users(tenant_id, local_id)
);

-- A room as this tenant knows it. host = server_name of the hosting tenant.
CREATE TABLE rooms (
    tenant_id  INTEGER NOT NULL REFERENCES tenants(tenant_id),
    room_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    federate   INTEGER NOT NULL,
    host       TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, room_id)
);

-- member is always a fqid (@local_id:server_name).
CREATE TABLE members (
    tenant_id  INTEGER NOT NULL,
    room_id    TEXT NOT NULL,
    member     TEXT NOT NULL,
    membership TEXT NOT NULL CHECK (membership IN ('invite', 'join', 'leave')),
    foreign_   INTEGER NOT NULL,
    display_name TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, room_id, member),
    FOREIGN KEY (tenant_id, room_id) REFERENCES rooms(tenant_id, room_id)
);
CREATE INDEX members_by_member ON members(tenant_id, member, membership);

-- pos: this tenant's stream position (SSE id), from tenants.stream_pos.
-- seq: the host's order within the room. signed: the event as signed by
-- its origin, kept verbatim for relaying and backfill.
CREATE TABLE events (
    rowid_     INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    pos        INTEGER NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    origin_ts  INTEGER NOT NULL,
    content    TEXT NOT NULL,
    signed     TEXT,
    received_at INTEGER NOT NULL,
    UNIQUE (tenant_id, event_id),
    UNIQUE (tenant_id, pos)
);
CREATE INDEX events_by_room ON events(tenant_id, room_id, seq);

CREATE VIRTUAL TABLE events_fts USING fts5(
    body, tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TABLE invites (
    invite_id  TEXT PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    room_id    TEXT NOT NULL,
    room_name  TEXT NOT NULL,
    room_type  TEXT NOT NULL,
    host       TEXT NOT NULL,
    invitee    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'declined')),
    event_id   TEXT,
    signed     TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX invites_by_invitee ON invites(tenant_id, invitee, state);

CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    local_id   TEXT NOT NULL,
    pos        INTEGER NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('invite', 'mention')),
    room_id    TEXT,
    event_id   TEXT,
    invite_id  TEXT,
    sender     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, pos)
);
CREATE INDEX notifications_by_user ON notifications(tenant_id, local_id, pos);
"""

# Federation v1: keys, peers and their keys, the outbox, audit, rejections.
_V2 = """
-- Our signing keys. seed is the private half; it is wiped (NULL) once the
-- key's overlap has ended. retired_at: when it stopped signing.
CREATE TABLE signing_keys (
    tenant_id  INTEGER NOT NULL REFERENCES tenants(tenant_id),
    key_id     TEXT NOT NULL,
    seed       BLOB,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    expires_at INTEGER,
    PRIMARY KEY (tenant_id, key_id)
);

-- What we know of each peer, per tenant: its descriptor, and delivery state.
CREATE TABLE peers (
    tenant_id         INTEGER NOT NULL,
    server_name       TEXT NOT NULL,
    descriptor        TEXT,
    fetched_at        INTEGER,
    last_seen         INTEGER,
    last_error        TEXT,
    last_error_at     INTEGER,
    failures          INTEGER NOT NULL DEFAULT 0,
    next_retry_at     INTEGER,
    PRIMARY KEY (tenant_id, server_name)
);

-- Peers' public keys, current and retired (retired_at set), per tenant.
CREATE TABLE peer_keys (
    tenant_id   INTEGER NOT NULL,
    server_name TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    retired_at  INTEGER,
    expires_at  INTEGER,
    fetched_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, server_name, key_id)
);

-- Events waiting to be delivered, in order, one queue per destination.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL,
    destination TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX outbox_by_destination ON outbox(tenant_id, destination, id);

-- Hourly counters of events sent to / received from each peer.
CREATE TABLE peer_counts (
    tenant_id   INTEGER NOT NULL,
    server_name TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0,
    received    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, server_name, hour)
);

-- Every refused federation event, with its reason code.
CREATE TABLE fed_rejected (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL,
    peer        TEXT NOT NULL,
    event_id    TEXT,
    room_id     TEXT,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX fed_rejected_by_tenant ON fed_rejected(tenant_id, id);

-- The audit trail (action = federation.* for federation).
CREATE TABLE sw_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT,
    peer       TEXT,
    event_id   TEXT,
    room_id    TEXT,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    details    TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX sw_audit_by_tenant ON sw_audit(tenant_id, id);
CREATE INDEX sw_audit_by_action ON sw_audit(tenant_id, action, id);
"""

_V3 = """
-- /healthz proves the file is writable by writing this one row.
CREATE TABLE health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
"""

_V4 = """
-- Rooms that converge (DESIGN §10).
-- Event ids are unique within a room, not across a tenant's rooms: a server
-- can only squat ids in rooms it hosts (only the host writes into its room).
-- status: 'sent' once the host has ordered the event (always, in rooms we
-- host); 'pending' for ours in a room hosted elsewhere until the host
-- answers; 'refused' when it said no (error: its {code, message}).
-- applied: the event's effects (membership, invites, notifications) are
-- written. In a room hosted elsewhere they are written in the host's order,
-- as synced_seq moves over the event: one that arrived beyond a gap waits.
CREATE TABLE events_v4 (
    rowid_     INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    pos        INTEGER NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    origin_ts  INTEGER NOT NULL,
    content    TEXT NOT NULL,
    signed     TEXT,
    received_at INTEGER NOT NULL,
    status     TEXT NOT NULL DEFAULT 'sent' CHECK (status IN ('pending', 'sent', 'refused')),
    error      TEXT,
    applied    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, room_id, event_id),
    UNIQUE (tenant_id, pos)
);
INSERT INTO events_v4 (rowid_, tenant_id, pos, room_id, event_id, seq, type, sender, origin,
    origin_ts, content, signed, received_at, status)
    SELECT rowid_, tenant_id, pos, room_id, event_id, seq, type, sender, origin, origin_ts,
    content, signed, received_at,
    CASE WHEN seq >= 1099511627776 THEN 'pending' ELSE 'sent' END  -- core.rooms.PENDING_SEQ
    FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_by_room ON events(tenant_id, room_id, seq);

-- In a room hosted elsewhere: every host seq up to synced_seq is here (from
-- our first join on); a relayed event beyond synced_seq + 1 is a gap that
-- we repair from the host.
ALTER TABLE rooms ADD COLUMN synced_seq INTEGER NOT NULL DEFAULT 0;

-- The room an outbox row belongs to: the host holds a room's rows while
-- its federate flag is off, and sends them when it is on again.
ALTER TABLE outbox ADD COLUMN room_id TEXT;

-- Invites and notifications are keyed per tenant: two tenants of one
-- process share a room exactly as two servers do, so both hold the same
-- invite id. Invites also end: refused by the invitee's server, cancelled.
CREATE TABLE invites_v4 (
    tenant_id  INTEGER NOT NULL,
    invite_id  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    room_name  TEXT NOT NULL,
    room_type  TEXT NOT NULL,
    host       TEXT NOT NULL,
    invitee    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    state      TEXT NOT NULL
        CHECK (state IN ('pending', 'accepted', 'declined', 'refused', 'cancelled')),
    event_id   TEXT,
    signed     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, invite_id)
);
INSERT INTO invites_v4 (tenant_id, invite_id, room_id, room_name, room_type, host, invitee,
    inviter, state, event_id, signed, created_at)
    SELECT tenant_id, invite_id, room_id, room_name, room_type, host, invitee, inviter, state,
    event_id, signed, created_at FROM invites;
DROP TABLE invites;
ALTER TABLE invites_v4 RENAME TO invites;
CREATE INDEX invites_by_invitee ON invites(tenant_id, invitee, state);
CREATE INDEX invites_by_room ON invites(tenant_id, room_id, invitee, state);

-- details: what the notification says beyond its type (JSON), e.g. the
-- invitee and the peer's error of an invite that ended.
CREATE TABLE notifications_v4 (
    tenant_id  INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    local_id   TEXT NOT NULL,
    pos        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    room_id    TEXT,
    event_id   TEXT,
    invite_id  TEXT,
    sender     TEXT NOT NULL,
    details    TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, notification_id),
    UNIQUE (tenant_id, pos)
);
INSERT INTO notifications_v4 (tenant_id, notification_id, local_id, pos, type, room_id,
    event_id, invite_id, sender, created_at)
    SELECT tenant_id, notification_id, local_id, pos, type, room_id, event_id, invite_id,
    sender, created_at FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_v4 RENAME TO notifications;
CREATE INDEX notifications_by_user ON notifications(tenant_id, local_id, pos);
"""

_V_PASSWORDS = """
-- People's passwords for the web client's login: Argon2id PHC strings.
CREATE TABLE passwords (
    tenant_id  INTEGER NOT NULL,
    local_id   TEXT NOT NULL,
    hash       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, local_id),
    FOREIGN KEY (tenant_id, local_id) REFERENCES users(tenant_id, local_id)
);

-- Tokens issued by a password login (the web client's sessions) expire;
-- tokens made by the CLI for API clients do not. Same hash as tokens.
CREATE TABLE login_sessions (
    token_hash BLOB PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    local_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX login_sessions_by_user ON login_sessions(tenant_id, local_id);
"""

_V_RETENTION = """
-- The housekeeping task deletes oldest first, in batches: by time, not by id.
CREATE INDEX sw_audit_by_time ON sw_audit(created_at);
CREATE INDEX fed_rejected_by_time ON fed_rejected(created_at);
CREATE INDEX peer_counts_by_hour ON peer_counts(hour);
CREATE INDEX login_sessions_by_expiry ON login_sessions(expires_at);
"""

_V_AUTH_VERSION = """
-- A number that moves whenever a token could stop meaning the user it meant
-- (a token, login session or user changed or went). The server keeps the
-- users of recent tokens in memory and trusts them only while it is the
-- same (swfed.storage.sessions); the CLI tells a running server when its
-- commit moved it (the sessions.changed stamp).
CREATE TABLE auth_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO auth_version (id, version) VALUES (1, 0);
CREATE TRIGGER auth_users_updated AFTER UPDATE ON users
    BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER auth_users_deleted AFTER DELETE ON users
    BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER auth_tokens_updated AFTER UPDATE ON tokens
    BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER auth_tokens_deleted AFTER DELETE ON tokens
    BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER auth_sessions_updated AFTER UPDATE ON login_sessions
    BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER auth_sessions_deleted AFTER DELETE ON login_sessions
    BEGIN UPDATE auth_version SET version = version + 1; END;

-- Queued events are stored as canonical JSON from now on, so that a /send
-- body is their bytes joined, signed as they are (nothing parsed or encoded
-- again per peer). Rows queued by an older swfed say 0 and are re-encoded.
ALTER TABLE outbox ADD COLUMN canonical INTEGER NOT NULL DEFAULT 0;
"""

# The outbox stores each queued event once: a room shared with fifty servers
# wrote the event's bytes fifty times (one row per destination), and deleted
# them fifty times. outbox_events holds the canonical JSON (a BLOB from now
# on; migrated rows keep their TEXT and canonical flag) and how many
# destinations have yet to settle it; outbox keeps one small row per
# destination, whose id orders that destination's queue as before. Queued
# rows keep their ids (an event row per old row, same id). No REFERENCES:
# with foreign_keys on, deleting an event would scan outbox for children.
_V_OUTBOX_EVENTS = """
CREATE TABLE outbox_events (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    room_id    TEXT,
    payload    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    canonical  INTEGER NOT NULL DEFAULT 1,
    pending    INTEGER NOT NULL
);
INSERT INTO outbox_events (id, tenant_id, event_id, room_id, payload, created_at, canonical,
                           pending)
    SELECT id, tenant_id, event_id, room_id, payload, created_at, canonical, 1 FROM outbox;

CREATE TABLE outbox_v8 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL,
    destination TEXT NOT NULL,
    event       INTEGER NOT NULL
);
INSERT INTO outbox_v8 (id, tenant_id, destination, event)
    SELECT id, tenant_id, destination, id FROM outbox;
-- ids are never reused: carry the old table's high-water mark over
DELETE FROM sqlite_sequence WHERE name = 'outbox_v8';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v8', seq FROM sqlite_sequence
    WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_v8 RENAME TO outbox;
CREATE INDEX outbox_by_destination ON outbox(tenant_id, destination, id);
"""

# A host seq is stored once per room (DESIGN §10: the host's numbers are
# contiguous and each names one event). Until now nothing said so, and a
# lying host's repair pages stored thousands of events under a few hundred
# seqs. A file may hold such duplicates: of each (tenant, room, seq) the row
# kept is our own users' event if one is there (their words are never
# dropped), else the first stored (the lowest rowid_, the one the synced
# mark moved over). Every other row is recorded in fed_rejected (the admin's
# rejected view; reason SW_FED_SEQ_TAKEN, peer the room's host) and dropped
# with its search entry and notifications. The room index becomes unique on
# the same columns, so it costs nothing more. fed_rejected gets an index by
# (tenant, peer, event_id): a host looks up whether an event a member
# server sent before was refused (federation.inbound, the ``after`` of a
# pipelined /send).
_V_UNIQUE_SEQ = """
CREATE TEMP TABLE seq_dropped AS
    SELECT rowid_, tenant_id, room_id, event_id, seq, kept FROM (
        SELECT e.rowid_, e.tenant_id, e.room_id, e.event_id, e.seq,
               FIRST_VALUE(e.event_id) OVER w AS kept,
               ROW_NUMBER() OVER w AS n
        FROM events e JOIN tenants t ON t.tenant_id = e.tenant_id
        WINDOW w AS (PARTITION BY e.tenant_id, e.room_id, e.seq
                     ORDER BY e.origin = t.server_name DESC, e.rowid_))
    WHERE n > 1;
INSERT INTO fed_rejected (tenant_id, peer, event_id, room_id, reason, message, created_at)
    SELECT d.tenant_id, COALESCE(r.host, '?'), d.event_id, d.room_id, 'SW_FED_SEQ_TAKEN',
           'dropped by migration 9: host seq ' || d.seq || ' of the room also named event '
           || d.kept || ' (a host seq names one event)',
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM seq_dropped d LEFT JOIN rooms r ON r.tenant_id = d.tenant_id AND r.room_id = d.room_id;
DELETE FROM events_fts WHERE rowid IN (SELECT rowid_ FROM seq_dropped);
DELETE FROM notifications WHERE event_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM seq_dropped d WHERE d.tenant_id = notifications.tenant_id
    AND d.room_id = notifications.room_id AND d.event_id = notifications.event_id);
DELETE FROM events WHERE rowid_ IN (SELECT rowid_ FROM seq_dropped);
DROP TABLE seq_dropped;
DROP INDEX events_by_room;
CREATE UNIQUE INDEX events_by_room ON events(tenant_id, room_id, seq);
CREATE INDEX fed_rejected_by_event ON fed_rejected(tenant_id, peer, event_id);
"""

# Invites are keyed by room (issue 18): an invite id is unique within its
# room, not across a tenant's rooms. Only a room's host makes its invites, so
# a server hosting another room can neither take an invite's id first (the
# real invite refused as a conflict, the invitee in the squatter's room) nor
# end the real one with an uninvite naming it. Rows keep everything they had.
_V_INVITES_BY_ROOM = """
CREATE TABLE invites_v10 (
    tenant_id  INTEGER NOT NULL,
    invite_id  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    room_name  TEXT NOT NULL,
    room_type  TEXT NOT NULL,
    host       TEXT NOT NULL,
    invitee    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    state      TEXT NOT NULL
        CHECK (state IN ('pending', 'accepted', 'declined', 'refused', 'cancelled')),
    event_id   TEXT,
    signed     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, room_id, invite_id)
);
INSERT INTO invites_v10 (tenant_id, invite_id, room_id, room_name, room_type, host, invitee,
    inviter, state, event_id, signed, created_at)
    SELECT tenant_id, invite_id, room_id, room_name, room_type, host, invitee, inviter, state,
    event_id, signed, created_at FROM invites;
DROP TABLE invites;
ALTER TABLE invites_v10 RENAME TO invites;
CREATE INDEX invites_by_invitee ON invites(tenant_id, invitee, state);
CREATE INDEX invites_by_room ON invites(tenant_id, room_id, invitee, state);
CREATE INDEX invites_by_id ON invites(tenant_id, invite_id, invitee);
"""

# Read state on the server (issue 20): a read marker per user per room (the
# host seq read up to; ``pos``: its stream position, so every device of the
# user hears of it) and ``seen`` notifications (``seen_pos``: the stream
# position the change took). Portable DDL: it runs unchanged on PostgreSQL.
_V_READ_STATE = """
CREATE TABLE read_markers (
    tenant_id  INTEGER NOT NULL,
    room_id    TEXT NOT NULL,
    member     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    pos        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, room_id, member)
);
CREATE INDEX read_markers_by_pos ON read_markers(tenant_id, member, pos);
ALTER TABLE notifications ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN seen_pos INTEGER;
CREATE INDEX notifications_by_seen ON notifications(tenant_id, local_id, seen_pos);
"""

_V_MEDIA = """
-- Files and images (issue 21). One row per media id a tenant knows: its own
-- uploads (origin = the tenant) and peers' files named by events it holds
-- (stored = 0 until fetched from the origin and checked against sha256/size).
-- The bytes live in data_dir/media/<sha256[:2]>/<sha256>, shared by content.
CREATE TABLE sw_media (
    tenant_id     INTEGER NOT NULL,
    media_id      TEXT NOT NULL,
    origin        TEXT NOT NULL,
    uploader      TEXT,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    inline_ok     INTEGER NOT NULL DEFAULT 0,
    stored        INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    fetch_failures INTEGER NOT NULL DEFAULT 0,
    next_fetch_at INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    PRIMARY KEY (tenant_id, media_id)
);
CREATE INDEX sw_media_by_sha ON sw_media (sha256);
CREATE INDEX sw_media_by_uploader ON sw_media (tenant_id, uploader);

-- Which stored events name which media: who may read a file, and when it is
-- no longer referenced.
CREATE TABLE sw_media_refs (
    tenant_id INTEGER NOT NULL,
    media_id  TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, media_id, event_id)
);
CREATE INDEX sw_media_refs_by_event ON sw_media_refs (tenant_id, event_id);
"""

#: (version, SQL script); versions are consecutive from 1. A script is one
#: portable text run on both engines, or {"sqlite": …, "postgresql": …}
#: (PostgreSQL starts at PG_BASELINE_VERSION, below).
MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (1, _V1),
    (2, _V2),
    (3, _V3),
    (4, _V4),
    (5, _V_PASSWORDS),
    (6, _V_RETENTION),
    (7, _V_AUTH_VERSION),
    (8, _V_OUTBOX_EVENTS),
    (9, _V_UNIQUE_SEQ),
    (10, _V_INVITES_BY_ROOM),
    (11, _V_READ_STATE),
    (12, _V_MEDIA),
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the file's version; return the version.

    Raises RuntimeError when the file comes from a newer swfed (downgrade).
    """
    latest = MIGRATIONS[-1][0]
    if schema_version(conn) > latest:
        raise RuntimeError(
            f"database schema version {schema_version(conn)} is newer than this swfed "
            f"knows ({latest}): upgrade swfed or restore a matching backup")
    for version, script in MIGRATIONS:
        if schema_version(conn) >= version:
            continue
        script = _script_for(script, "sqlite")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= version:  # another process got here first
                conn.execute("ROLLBACK")
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)

# -- PostgreSQL ----------------------------------------------------------------
#
# No PostgreSQL database predates migration 10, so PostgreSQL starts from one
# baseline script: the schema SQLite has after migrations 1-10, in PostgreSQL's
# types (BIGINT for every INTEGER: times are milliseconds; BYTEA for BLOB;
# identity columns where SQLite assigns rowids: a column's INTEGER PRIMARY KEY).
# Two things differ by engine:
# - search: a plain table with a tsvector column and a GIN index (the
#   ``simple`` configuration over ``unaccent``) instead of the FTS5 table;
# - auth_version: moved by PL/pgSQL triggers, like SQLite's six triggers, so
#   every write path (server and CLI alike) moves it without the
#   transactions having to remember (swfed.storage.sessions trusts it).
# Migrations after 10 run on both engines: a portable script (its INTEGER
# and BLOB columns become BIGINT and BYTEA on PostgreSQL, see _pg_ddl) or a
# {"sqlite": …, "postgresql": …} pair where they must differ.
PG_BASELINE_VERSION = 10

_PG_BASELINE = """
CREATE TABLE tenants (
    tenant_id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    server_name        TEXT NOT NULL UNIQUE,
    is_default         BIGINT NOT NULL DEFAULT 0,
    federation_enabled BIGINT NOT NULL DEFAULT 1,
    policy             TEXT NOT NULL DEFAULT '{}',
    stream_pos         BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL
);
CREATE TABLE users (
    tenant_id    BIGINT NOT NULL REFERENCES tenants(tenant_id),
    local_id     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    admin        BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, local_id)
);
CREATE TABLE tokens (
    token_hash BYTEA PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    local_id   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, local_id) REFERENCES users(tenant_id, local_id)
);
CREATE TABLE rooms (
    tenant_id  BIGINT NOT NULL REFERENCES tenants(tenant_id),
    room_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    federate   BIGINT NOT NULL,
    host       TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    synced_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, room_id)
);
CREATE TABLE members (
    tenant_id  BIGINT NOT NULL,
    room_id    TEXT NOT NULL,
    member     TEXT NOT NULL,
    membership TEXT NOT NULL CHECK (membership IN ('invite', 'join', 'leave')),
    foreign_   BIGINT NOT NULL,
    display_name TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, room_id, member),
    FOREIGN KEY (tenant_id, room_id) REFERENCES rooms(tenant_id, room_id)
);
CREATE TABLE events (
    rowid_     BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    pos        BIGINT NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    type       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    origin_ts  BIGINT NOT NULL,
    content    TEXT NOT NULL,
    signed     TEXT,
    received_at BIGINT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'sent' CHECK (status IN ('pending', 'sent', 'refused')),
    error      TEXT,
    applied    BIGINT NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, room_id, event_id),
    UNIQUE (tenant_id, pos)
);
CREATE TABLE invites (
    tenant_id  BIGINT NOT NULL,
    invite_id  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    room_name  TEXT NOT NULL,
    room_type  TEXT NOT NULL,
    host       TEXT NOT NULL,
    invitee    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    state      TEXT NOT NULL
        CHECK (state IN ('pending', 'accepted', 'declined', 'refused', 'cancelled')),
    event_id   TEXT,
    signed     TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, room_id, invite_id)
);
CREATE TABLE notifications (
    tenant_id  BIGINT NOT NULL,
    notification_id TEXT NOT NULL,
    local_id   TEXT NOT NULL,
    pos        BIGINT NOT NULL,
    type       TEXT NOT NULL,
    room_id    TEXT,
    event_id   TEXT,
    invite_id  TEXT,
    sender     TEXT NOT NULL,
    details    TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, notification_id),
    UNIQUE (tenant_id, pos)
);
CREATE TABLE signing_keys (
    tenant_id  BIGINT NOT NULL REFERENCES tenants(tenant_id),
    key_id     TEXT NOT NULL,
    seed       BYTEA,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    expires_at BIGINT,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE TABLE peers (
    tenant_id         BIGINT NOT NULL,
    server_name       TEXT NOT NULL,
    descriptor        TEXT,
    fetched_at        BIGINT,
    last_seen         BIGINT,
    last_error        TEXT,
    last_error_at     BIGINT,
    failures          BIGINT NOT NULL DEFAULT 0,
    next_retry_at     BIGINT,
    PRIMARY KEY (tenant_id, server_name)
);
CREATE TABLE peer_keys (
    tenant_id   BIGINT NOT NULL,
    server_name TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    retired_at  BIGINT,
    expires_at  BIGINT,
    fetched_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, server_name, key_id)
);
CREATE TABLE outbox_events (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    room_id    TEXT,
    payload    BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    canonical  BIGINT NOT NULL DEFAULT 1,
    pending    BIGINT NOT NULL
);
CREATE TABLE outbox (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    destination TEXT NOT NULL,
    event       BIGINT NOT NULL
);
CREATE TABLE peer_counts (
    tenant_id   BIGINT NOT NULL,
    server_name TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    sent        BIGINT NOT NULL DEFAULT 0,
    received    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, server_name, hour)
);
CREATE TABLE fed_rejected (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    peer        TEXT NOT NULL,
    event_id    TEXT,
    room_id     TEXT,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE sw_audit (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT,
    peer       TEXT,
    event_id   TEXT,
    room_id    TEXT,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    details    TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE health (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL
);
CREATE TABLE passwords (
    tenant_id  BIGINT NOT NULL,
    local_id   TEXT NOT NULL,
    hash       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, local_id),
    FOREIGN KEY (tenant_id, local_id) REFERENCES users(tenant_id, local_id)
);
CREATE TABLE login_sessions (
    token_hash BYTEA PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    local_id   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE auth_version (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_by_room ON events(tenant_id, room_id, seq);
CREATE INDEX fed_rejected_by_event ON fed_rejected(tenant_id, peer, event_id);
CREATE INDEX fed_rejected_by_tenant ON fed_rejected(tenant_id, id);
CREATE INDEX fed_rejected_by_time ON fed_rejected(created_at);
CREATE INDEX invites_by_id ON invites(tenant_id, invite_id, invitee);
CREATE INDEX invites_by_invitee ON invites(tenant_id, invitee, state);
CREATE INDEX invites_by_room ON invites(tenant_id, room_id, invitee, state);
CREATE INDEX login_sessions_by_expiry ON login_sessions(expires_at);
CREATE INDEX login_sessions_by_user ON login_sessions(tenant_id, local_id);
CREATE INDEX members_by_member ON members(tenant_id, member, membership);
CREATE INDEX notifications_by_user ON notifications(tenant_id, local_id, pos);
CREATE INDEX outbox_by_destination ON outbox(tenant_id, destination, id);
CREATE INDEX peer_counts_by_hour ON peer_counts(hour);
CREATE INDEX sw_audit_by_action ON sw_audit(tenant_id, action, id);
CREATE INDEX sw_audit_by_tenant ON sw_audit(tenant_id, id);
CREATE INDEX sw_audit_by_time ON sw_audit(created_at);

CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TABLE events_fts (
    rowid BIGINT PRIMARY KEY,
    tsv   TSVECTOR NOT NULL
);
CREATE INDEX events_fts_tsv ON events_fts USING GIN (tsv);

INSERT INTO auth_version (id, version) VALUES (1, 0);
CREATE FUNCTION swfed_auth_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_version SET version = version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER auth_users_changed AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION swfed_auth_moved();
CREATE TRIGGER auth_tokens_changed AFTER UPDATE OR DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION swfed_auth_moved();
CREATE TRIGGER auth_sessions_changed AFTER UPDATE OR DELETE ON login_sessions
    FOR EACH ROW EXECUTE FUNCTION swfed_auth_moved();
"""

#: The table holding a PostgreSQL database's schema version (SQLite keeps
#: PRAGMA user_version).
_PG_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS swfed_schema (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
)
"""
#: pg_advisory_lock key: migrations run once however many processes start.
_PG_MIGRATE_LOCK = 0x5377_6665_6400


def _script_for(script: str | dict[str, str], dialect: str) -> str:
    if isinstance(script, dict):
        return script[dialect]
    return script if dialect == "sqlite" else _pg_ddl(script)


def _pg_ddl(script: str) -> str:
    """A portable migration's DDL in PostgreSQL's types."""
    # a column's INTEGER PRIMARY KEY is SQLite's rowid, assigned when not given
    script = re.sub(r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?\b",
                    "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", script)
    script = re.sub(r"\bINTEGER\b", "BIGINT", script)
    return re.sub(r"\bBLOB\b", "BYTEA", script)


def pg_schema_version(conn: Conn) -> int:
    conn.execute(_PG_VERSION_TABLE)
    row = conn.execute("SELECT version FROM swfed_schema WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def migrate_pg(conn: Conn) -> int:
    """Bring a PostgreSQL database to the latest version (under an advisory lock).

    ``conn`` is in autocommit mode; each step is its own transaction. Raises
    RuntimeError when the database comes from a newer swfed, or when the
    cluster lacks the unaccent extension.
    """
    latest = MIGRATIONS[-1][0]
    conn.execute("SELECT pg_advisory_lock(?)", (_PG_MIGRATE_LOCK,))
    try:
        current = pg_schema_version(conn)
        if current > latest:
            raise RuntimeError(
                f"database schema version {current} is newer than this swfed knows "
                f"({latest}): upgrade swfed or restore a matching backup")
        steps: list[tuple[int, str]] = []
        if current < PG_BASELINE_VERSION:
            steps.append((PG_BASELINE_VERSION, _PG_BASELINE))
        steps += [(v, _script_for(s, "postgresql")) for v, s in MIGRATIONS
                  if v > max(current, PG_BASELINE_VERSION)]
        for version, script in steps:
            conn.execute("BEGIN")
            try:
                for statement in _pg_statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO swfed_schema (id, version) VALUES (1, ?)"
                             " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                             (version,))
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if "unaccent" in str(exc):
                    raise RuntimeError(
                        f"the PostgreSQL cluster cannot CREATE EXTENSION unaccent ({exc}): "
                        "install PostgreSQL's contrib modules (Debian: postgresql-contrib, "
                        "part of the postgresql package) or create the extension as a "
                        "superuser in this database") from exc
                raise
        return pg_schema_version(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(?)", (_PG_MIGRATE_LOCK,))


def _pg_statements(script: str) -> list[str]:
    """Split a script on ';' at line ends, keeping $$ … $$ bodies whole."""
    out: list[str] = []
    buf = ""
    in_body = False
    for line in script.splitlines(keepends=True):
        if not in_body and line.lstrip().startswith("--"):
            continue
        buf += line
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and line.rstrip().endswith(";"):
            out.append(buf.strip().rstrip(";"))
            buf = ""
    if buf.strip():
        out.append(buf.strip().rstrip(";"))
    return out


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on complete statements.
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
