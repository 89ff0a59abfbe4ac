"""Scheduled backups (``[backup] interval_hours``, ``keep``, ``dir``).

Every ``interval_hours`` the running server copies its database with SQLite's
online backup API (as ``swfed admin backup`` does) to
``dir/swfed-YYYYMMDDTHHMMSSZ.sqlite3``, written under a temporary name and
renamed, 0600 like every file swfed makes (the keys are in it), and the media
files its rows name to ``FILE.media/`` beside it, as ``admin backup`` does;
then only the newest ``keep`` of those backups stay (with their media). A
start waits out what is left of the interval since the newest backup there,
so restarts do not pile up copies.
A failed backup is logged (``backup.failed``) and tried again an interval later.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import trio

from swfed import logs
from swfed.config import Config

NAME_RE = re.compile(r"^swfed-\d{8}T\d{6}Z\.sqlite3$")


def backup_dir(config: Config) -> Path:
    return config.backup.dir or config.server.data_dir / "backups"


def backup_name(now: float) -> str:
    return time.strftime("swfed-%Y%m%dT%H%M%SZ.sqlite3", time.gmtime(now))


def backups_in(directory: Path) -> list[Path]:
    """Our backup files there, oldest first (the names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if NAME_RE.match(p.name))


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups (and their media); the paths deleted."""
    old = backups_in(directory)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
        shutil.rmtree(Path(f"{path}.media"), ignore_errors=True)
    return old


def copy_media(config: Config, backup: Path) -> int:
    """The media files the backup's rows name, to ``backup.media/``; how many (sync)."""
    from swfed.storage import media as media_db
    from swfed.storage.db import open_direct, run_in_transaction

    conn = open_direct(backup)
    try:
        hashes = run_in_transaction(conn, media_db.stored_hashes_txn)
    finally:
        conn.close()
    files, _ = media_db.copy_files(media_db.MediaStore.for_data_dir(config.server.data_dir),
                                   media_db.MediaStore(Path(f"{backup}.media")), hashes)
    return files


def _seconds_since_newest(directory: Path, now: float) -> float | None:
    found = backups_in(directory)
    if not found:
        return None
    return now - found[-1].stat().st_mtime


async def back_up_once(state: Any, now: float) -> Path:
    """One backup and rotation; returns the new file (``state``: swfed.app.State)."""
    config: Config = state.config
    directory = backup_dir(config)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / backup_name(now)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    await state.db.backup(tmp)
    tmp.replace(target)
    media_files = await trio.to_thread.run_sync(copy_media, config, target)
    removed = rotate(directory, config.backup.keep)
    logs.log("backup.done", file=str(target), bytes=target.stat().st_size,
             media_files=media_files, removed=[p.name for p in removed],
             keep=config.backup.keep)
    return target


async def run_backups(state: Any, *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Back up every interval until cancelled; returns at once when backups are off."""
    cfg = state.config.backup
    task_status.started()
    if not cfg.enabled:
        return
    interval = cfg.interval_hours * 3600
    since = _seconds_since_newest(backup_dir(state.config), time.time())
    await trio.sleep(max(0.0, interval - since) if since is not None else interval)
    while True:
        try:
            await back_up_once(state, time.time())
        except Exception as exc:  # a full disk must not take the server down
            logs.log_exception("backup.failed", error=type(exc).__name__,
                               retry_in_seconds=interval)
        await trio.sleep(interval)
