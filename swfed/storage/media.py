"""Files and images: the ``sw_media`` and ``sw_media_refs`` tables and the files on disk.

The bytes of a file live once per content under ``data_dir/media`` as
``<sha256[:2]>/<sha256>`` (0600), whatever tenant or upload they came with;
an upload is written to ``media/tmp`` first, fsynced, and renamed into place
by :func:`add_upload_txn` in the transaction that records it, so a file is
visible under its hash only once it is whole. Every rename into place and
every unlink of a file happens inside a write transaction (on the one writer),
so collecting a file never races an upload of the same bytes.

A row per media id a tenant knows: its own uploads (``origin`` is the
tenant) and the peers' files its events name (``stored`` once fetched and
checked). ``sw_media_refs`` says which stored events name which media:
who may read a file, and when nothing refers to it any more
(:func:`release_event_txn` is the hook a deleted message calls).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import attrs

from swfed.core.errors import SwfedError
from swfed.core.media import (
    AttachmentSpec,
    MediaFacts,
    attachment_content,
    event_attachments,
    may_attach,
    ref_conflicts,
)
from swfed.core.rooms import server_of
from swfed.storage.conn import Conn, Row
from swfed.storage.tenants import Tenant

#: A temp file older than this is a crashed upload's (seconds).
STALE_TEMP_SECONDS = 3600


@attrs.frozen
class MediaStore:
    """Where the files are: ``data_dir/media``."""

    root: Path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> MediaStore:
        return cls(Path(data_dir) / "media")

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def ensure(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def temp_path(self) -> Path:
        self.ensure()
        return self.tmp / f"{secrets.token_hex(12)}.part"

    def place(self, temp: Path, sha256: str) -> None:
        """Move a whole, fsynced temp file to its content name (atomic), dir fsynced."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(temp, 0o600)
        os.replace(temp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def files(self) -> list[tuple[str, float]]:
        """(sha256, mtime) of every file in place."""
        out = []
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if sub.name == "tmp" or not sub.is_dir():
                continue
            for f in sub.iterdir():
                try:
                    out.append((f.name, f.stat().st_mtime))
                except FileNotFoundError:
                    pass
        return out


def _facts(row: Row) -> MediaFacts:
    return MediaFacts(media_id=row["media_id"], origin=row["origin"], uploader=row["uploader"],
                      content_type=row["content_type"], size=int(row["size"]),
                      sha256=row["sha256"], stored=bool(row["stored"]),
                      inline_ok=bool(row["inline_ok"]))


_COLUMNS = "media_id, origin, uploader, content_type, size, sha256, stored, inline_ok"


def media_txn(conn: Conn, tenant: Tenant, media_id: str) -> MediaFacts | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM sw_media WHERE tenant_id = ? AND media_id = ?",
                       (tenant.tenant_id, media_id)).fetchone()
    return None if row is None else _facts(row)


def usage_txn(conn: Conn, tenant: Tenant, uploader: str) -> tuple[int, int]:
    """(bytes of ``uploader``'s uploads, bytes of all this tenant's uploads)."""
    mine = conn.execute("SELECT COALESCE(SUM(size), 0) FROM sw_media WHERE tenant_id = ?"
                        " AND uploader = ?", (tenant.tenant_id, uploader)).fetchone()[0]
    ours = conn.execute("SELECT COALESCE(SUM(size), 0) FROM sw_media WHERE tenant_id = ?"
                        " AND uploader IS NOT NULL", (tenant.tenant_id,)).fetchone()[0]
    return int(mine), int(ours)


def check_quota(used: tuple[int, int], size: int, user_quota: int, tenant_quota: int) -> None:
    """Raises 507 SW_MEDIA_QUOTA_USER / SW_MEDIA_QUOTA_TENANT."""
    mine, ours = used
    if mine + size > user_quota:
        raise SwfedError(f"this upload ({size} bytes) would put you over your media quota "
                         f"({mine} of {user_quota} bytes used): delete files or ask the "
                         "admin ([media] user_quota_bytes)", code="SW_MEDIA_QUOTA_USER",
                         status=507)
    if ours + size > tenant_quota:
        raise SwfedError(f"this upload ({size} bytes) would put this server over its media "
                         f"quota ({tenant_quota} bytes, [media] tenant_quota_bytes): tell "
                         "the admin", code="SW_MEDIA_QUOTA_TENANT", status=507)


@attrs.frozen
class Upload:
    """A whole upload in a temp file, hashed, waiting to be recorded."""

    temp: Path
    sha256: str
    size: int
    content_type: str
    inline_ok: bool


def add_upload_txn(conn: Conn, tenant: Tenant, store: MediaStore, uploader: str,
                   media_id: str, upload: Upload, now: int, user_quota: int,
                   tenant_quota: int) -> None:
    """Record an upload and move its file into place, within the quotas (checked again
    here: two uploads at once cannot both slip under). Raises the quota's 507; the
    caller removes the temp file of a refused upload."""
    check_quota(usage_txn(conn, tenant, uploader), upload.size, user_quota, tenant_quota)
    conn.execute(
        "INSERT INTO sw_media (tenant_id, media_id, origin, uploader, sha256, size,"
        " content_type, inline_ok, stored, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
        (tenant.tenant_id, media_id, tenant.server_name, uploader, upload.sha256, upload.size,
         upload.content_type, int(upload.inline_ok), now))
    store.place(upload.temp, upload.sha256)


def in_room_with_txn(conn: Conn, tenant: Tenant, media_id: str, member: str) -> bool:
    """Is ``member`` joined to a room one of whose stored events names the media?"""
    return conn.execute(
        "SELECT 1 FROM sw_media_refs r JOIN members m ON m.tenant_id = r.tenant_id"
        " AND m.room_id = r.room_id WHERE r.tenant_id = ? AND r.media_id = ?"
        " AND m.member = ? AND m.membership = 'join' LIMIT 1",
        (tenant.tenant_id, media_id, member)).fetchone() is not None


def readable_txn(conn: Conn, tenant: Tenant, media_id: str,
                 viewer: str) -> tuple[MediaFacts | None, bool]:
    """(what we hold, whether ``viewer`` is in a room naming it)."""
    held = media_txn(conn, tenant, media_id)
    return held, held is not None and in_room_with_txn(conn, tenant, media_id, viewer)


def resolve_attachments_txn(conn: Conn, tenant: Tenant, sender: str,
                            specs: tuple[AttachmentSpec, ...]) -> list[dict[str, Any]]:
    """The signed form of a message's attachments; raises SW_MEDIA_NOT_FOUND for a
    media the sender may not attach, SW_MEDIA_MISMATCH for wrong details."""
    out = []
    for spec in specs:
        held = media_txn(conn, tenant, spec.media_id)
        may_attach(sender, held, held is not None and in_room_with_txn(
            conn, tenant, spec.media_id, sender))
        assert held is not None
        out.append(attachment_content(spec, held))
    return out


def reference_txn(conn: Conn, tenant: Tenant, event: dict[str, Any], now: int) -> None:
    """A message was stored: record what it names (and, for a peer's file, that it is
    to be fetched from the event's origin). A media id we hold under another hash
    or size keeps its first facts, and this event gives no access to it."""
    for item in event_attachments(event):
        media_id = item["media_id"]
        held = media_txn(conn, tenant, media_id)
        if ref_conflicts(held, item):
            continue
        if held is None:
            conn.execute(
                "INSERT INTO sw_media (tenant_id, media_id, origin, uploader, sha256, size,"
                " content_type, inline_ok, stored, created_at) VALUES (?, ?, ?, NULL, ?, ?, ?,"
                " 0, 0, ?) ON CONFLICT (tenant_id, media_id) DO NOTHING",
                (tenant.tenant_id, media_id, event["origin"], item["sha256"], item["size"],
                 item["content_type"], now))
            if event["origin"] != tenant.server_name:
                conn.touched.fetch_media(tenant.tenant_id, media_id)
        conn.execute("INSERT INTO sw_media_refs (tenant_id, media_id, room_id, event_id)"
                     " VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, media_id, event_id)"
                     " DO NOTHING", (tenant.tenant_id, media_id, event["room_id"],
                                     event["event_id"]))


def release_event_txn(conn: Conn, tenant: Tenant, event_id: str) -> int:
    """A message is gone (deleted): it names nothing any more. Its files are collected
    by :func:`collect_txn` once no other event names them. Returns refs dropped."""
    return conn.execute("DELETE FROM sw_media_refs WHERE tenant_id = ? AND event_id = ?",
                        (tenant.tenant_id, event_id)).rowcount


def peer_may_fetch_txn(conn: Conn, tenant: Tenant, media_id: str,
                       requester: str) -> MediaFacts | None:
    """The media if it is here and ``requester`` has a joined member in a room whose
    stored events name it; else None."""
    held = media_txn(conn, tenant, media_id)
    if held is None or not held.stored:
        return None
    rows = conn.execute(
        "SELECT m.member FROM sw_media_refs r JOIN members m ON m.tenant_id = r.tenant_id"
        " AND m.room_id = r.room_id WHERE r.tenant_id = ? AND r.media_id = ?"
        " AND m.membership = 'join'", (tenant.tenant_id, media_id)).fetchall()
    return held if any(server_of(r[0]) == requester for r in rows) else None


def fetched_txn(conn: Conn, tenant: Tenant, store: MediaStore, media_id: str, temp: Path,
                inline_ok: bool) -> None:
    """A peer's file arrived and matched its signed hash and size: keep it."""
    held = media_txn(conn, tenant, media_id)
    if held is None:
        temp.unlink(missing_ok=True)
        return
    store.place(temp, held.sha256)
    conn.execute("UPDATE sw_media SET stored = 1, inline_ok = ?, fetch_failures = 0,"
                 " last_error = NULL WHERE tenant_id = ? AND media_id = ?",
                 (int(inline_ok), tenant.tenant_id, media_id))


def fetch_failed_txn(conn: Conn, tenant: Tenant, media_id: str, error: str,
                     retry_at: int) -> None:
    conn.execute("UPDATE sw_media SET fetch_failures = fetch_failures + 1, last_error = ?,"
                 " next_fetch_at = ? WHERE tenant_id = ? AND media_id = ?",
                 (error[:500], retry_at, tenant.tenant_id, media_id))


def fetch_state_txn(conn: Conn, tenant: Tenant, media_id: str) -> tuple[int, int]:
    """(failures so far, next attempt at ms) of a peer's file not here yet."""
    row = conn.execute("SELECT fetch_failures, next_fetch_at FROM sw_media WHERE"
                       " tenant_id = ? AND media_id = ?", (tenant.tenant_id, media_id)).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _unlink_if_unused(conn: Conn, store: MediaStore, sha256: str) -> bool:
    if conn.execute("SELECT 1 FROM sw_media WHERE sha256 = ? LIMIT 1",
                    (sha256,)).fetchone() is not None:
        return False
    store.path(sha256).unlink(missing_ok=True)
    return True


def collect_txn(conn: Conn, store: MediaStore, upload_cutoff: int, limit: int) -> int:
    """Delete up to ``limit`` media rows nothing refers to -- uploads older than
    ``upload_cutoff`` (ms), peers' files at once -- and their files once no row of any
    tenant names those bytes. Returns the rows deleted."""
    rows = conn.execute(
        "SELECT tenant_id, media_id, sha256 FROM sw_media m WHERE NOT EXISTS (SELECT 1 FROM"
        " sw_media_refs r WHERE r.tenant_id = m.tenant_id AND r.media_id = m.media_id)"
        " AND (m.uploader IS NULL OR m.created_at < ?) ORDER BY m.created_at LIMIT ?",
        (upload_cutoff, limit)).fetchall()
    for row in rows:
        conn.execute("DELETE FROM sw_media WHERE tenant_id = ? AND media_id = ?",
                     (row[0], row[1]))
    for sha256 in {r[2] for r in rows}:
        _unlink_if_unused(conn, store, sha256)
    return len(rows)


def sweep_files_txn(conn: Conn, store: MediaStore, older_than: float) -> int:
    """Remove files in place that no row names, last written before ``older_than``
    (epoch seconds), and temp files of uploads that crashed (untouched for
    :data:`STALE_TEMP_SECONDS`). Returns the files removed."""
    removed = 0
    for sha256, mtime in store.files():
        if mtime < older_than and _unlink_if_unused(conn, store, sha256):
            removed += 1
    if store.tmp.is_dir():
        stale = time.time() - STALE_TEMP_SECONDS
        for f in store.tmp.iterdir():
            try:
                if f.stat().st_mtime < stale:
                    f.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


def usage_report_txn(conn: Conn) -> list[dict[str, Any]]:
    """Per tenant and uploader: files and bytes (uploads), and peers' files cached."""
    rows = conn.execute(
        "SELECT t.server_name, m.uploader, COUNT(*), COALESCE(SUM(m.size), 0),"
        " SUM(m.stored) FROM sw_media m JOIN tenants t ON t.tenant_id = m.tenant_id"
        " GROUP BY t.server_name, m.uploader ORDER BY t.server_name, m.uploader").fetchall()
    return [{"tenant": r[0], "uploader": r[1], "files": int(r[2]), "bytes": int(r[3]),
             "stored": int(r[4] or 0)} for r in rows]


def stored_hashes_txn(conn: Conn) -> list[str]:
    """Every sha256 whose bytes a row says are here (what a backup must copy)."""
    return sorted(str(r[0]) for r in conn.execute(
        "SELECT DISTINCT sha256 FROM sw_media WHERE stored = 1"))


def copy_files(source: MediaStore, target: MediaStore, hashes: list[str]) -> tuple[int, int]:
    """Copy the files of ``hashes`` (those present) from one media directory to another;
    (files, bytes) copied. Files already at the target are kept (same name, same bytes)."""
    files = size = 0
    for sha256 in hashes:
        src, dst = source.path(sha256), target.path(sha256)
        if not src.exists() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = dst.with_name(dst.name + ".part")
        try:
            shutil.copyfile(src, part)
        except FileNotFoundError:  # collected meanwhile (the server runs): not needed
            continue
        os.chmod(part, 0o600)
        os.replace(part, dst)
        files += 1
        size += dst.stat().st_size
    return files, size
