"""The housekeeping task of DESIGN §1: retention of what only grows.

Once at start and then every ``[retention] interval_seconds``, it deletes
audit rows (``sw_audit``) older than ``audit_days``, rejected-event rows
(``fed_rejected``) older than ``rejected_days``, hourly peer counters older
than ``peer_counts_days`` and expired web sessions; and media nothing refers
to (uploads after ``[media] unreferenced_hours``, files without a row,
crashed uploads' temp files: :func:`collect_media`). Each table is pruned in
batches of ``batch_rows`` rows, one write transaction per batch
(``swfed.storage.retention``), yielding between batches, so other writes are
never held up behind a long delete: a batch is a short job on the writer
thread like any request's.

A failed run is logged (``housekeeping.failed``) and retried at the next
interval; it never stops the server. What was deleted is logged as
``housekeeping.pruned`` with a count per table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from swfed import logs
from swfed.config import RetentionConfig
from swfed.storage import media as media_db
from swfed.storage import retention
from swfed.storage.db import Database

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000


def _jobs(cfg: RetentionConfig, now: int) -> list[tuple[str, Callable[..., int], int]]:
    """(table, batch function, cutoff) for one run at ``now`` (ms)."""
    return [
        ("sw_audit", retention.prune_audit_txn, now - cfg.audit_days * DAY_MS),
        ("fed_rejected", retention.prune_rejected_txn, now - cfg.rejected_days * DAY_MS),
        ("peer_counts", retention.prune_peer_counts_txn,
         (now - cfg.peer_counts_days * DAY_MS) // HOUR_MS),
        ("login_sessions", retention.prune_login_sessions_txn, now),
    ]


async def prune_once(db: Database, cfg: RetentionConfig, now: int) -> dict[str, int]:
    """One run over every table; returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, fn, cutoff in _jobs(cfg, now):
        total = 0
        while True:
            n = await db.write(fn, cutoff, cfg.batch_rows)
            total += n
            if n < cfg.batch_rows:
                break
            await trio.sleep(0)  # let queued writes in between batches
        deleted[table] = total
    return deleted


async def collect_media(state: Any, now: int) -> dict[str, int]:
    """Files nothing refers to: uploads no message names after ``[media]
    unreferenced_hours``, peers' files at once; then files and crashed uploads'
    temp files no row names (swfed.storage.media)."""
    cfg = state.config.media
    store = media_db.MediaStore.for_data_dir(state.config.server.data_dir)
    cutoff = now - int(cfg.unreferenced_hours * HOUR_MS)
    batch = state.config.retention.batch_rows
    rows = 0
    while True:
        n = await state.db.write(media_db.collect_txn, store, cutoff, batch)
        rows += n
        if n < batch:
            break
        await trio.sleep(0)
    files = await state.db.write(media_db.sweep_files_txn, store, cutoff / 1000)
    return {"sw_media": rows, "media_files": files}


async def run_housekeeping(state: Any, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """Prune now and every interval until cancelled (``state``: swfed.app.State)."""
    cfg: RetentionConfig = state.config.retention
    task_status.started()
    while True:
        try:
            deleted = await prune_once(state.db, cfg, state.clock())
            deleted.update(await collect_media(state, state.clock()))
        except Exception as exc:  # a bad run must not take the server down
            logs.log_exception("housekeeping.failed", error=type(exc).__name__,
                               retry_in_seconds=cfg.interval_seconds)
        else:
            if any(deleted.values()):
                logs.log("housekeeping.pruned", **deleted)
        await trio.sleep(cfg.interval_seconds)
