"""The housekeeping task of DESIGN §1: retention of what only grows.

Once at start and then every ``[retention] interval_seconds``, it deletes
audit rows (``sw_audit``) older than ``audit_days``, rejected-event rows
(``fed_rejected``) older than ``rejected_days``, hourly peer counters older
than ``peer_counts_days`` and expired web sessions. Each table is pruned in
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


async def run_housekeeping(state: Any, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """Prune now and every interval until cancelled (``state``: swfed.app.State)."""
    cfg: RetentionConfig = state.config.retention
    task_status.started()
    while True:
        try:
            deleted = await prune_once(state.db, cfg, state.clock())
        except Exception as exc:  # a bad run must not take the server down
            logs.log_exception("housekeeping.failed", error=type(exc).__name__,
                               retry_in_seconds=cfg.interval_seconds)
        else:
            if any(deleted.values()):
                logs.log("housekeeping.pruned", **deleted)
        await trio.sleep(cfg.interval_seconds)
