"""What a peer answered for a batch we sent: the outbox, our copies, the record.

One named transaction, :func:`record_delivery_txn`, run by the sender after
each ``/send`` that the peer answered.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs

from swfed.core.ids import room_host
from swfed.storage import peers as peers_db
from swfed.storage.audit import audit_txn, reject_txn
from swfed.storage.events import set_host_seq_txn
from swfed.storage.tenants import Tenant


@attrs.frozen
class Delivery:
    """``delivered``: when each delivered event was queued; ``refused``: their codes."""

    delivered: list[int]
    refused: list[str]


def record_delivery_txn(conn: sqlite3.Connection, tenant: Tenant, dest: str,
                        batch: list[peers_db.Queued], results: dict[str, Any],
                        now: int) -> Delivery:
    """Settle each queued event the peer answered for; the rest stay queued.

    Stored (or already had): it leaves the outbox, and when ``dest`` hosts
    the room we adopt the host's sequence number. Refused for good: it
    leaves the outbox and is recorded (``fed_rejected``, ``sw_audit``).
    """
    done: list[int] = []
    delivered: list[int] = []
    refused: list[str] = []
    for q in batch:
        result = results.get(q.event_id)
        if not isinstance(result, dict):
            continue  # not answered for: stays queued, sent again
        done.append(q.id)
        error = result.get("error")
        if isinstance(error, dict):
            refused.append(str(error.get("code")))
            reject_txn(conn, tenant, dest, now, reason=str(error.get("code")),
                       message=str(error.get("message", "")), event_id=q.event_id,
                       room_id=q.payload.get("room_id"), action="federation.send.refused")
            continue
        delivered.append(q.created_at)
        seq = result.get("seq")
        if (isinstance(seq, int) and not isinstance(seq, bool)
                and room_host(str(q.payload.get("room_id", ""))) == dest):
            set_host_seq_txn(conn, tenant, q.event_id, seq)
    peers_db.outbox_done_txn(conn, tenant.tenant_id, done)
    peers_db.count_txn(conn, tenant.tenant_id, dest, now, sent=len(delivered))
    peers_db.peer_ok_txn(conn, tenant.tenant_id, dest, now)
    audit_txn(conn, tenant, "federation.send", now, outcome="ok", peer=dest,
              details={"events": len(delivered), "refused": len(refused)})
    return Delivery(delivered, refused)
