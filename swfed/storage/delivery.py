"""What a peer answered for a batch we sent: the outbox, our copies, the record.

One named transaction, :func:`record_delivery_txn`, run by the sender after
each ``/send`` whose answer settled something (classified by
:func:`swfed.core.delivery.classify`).
"""

from __future__ import annotations

import attrs

from swfed.core.delivery import Settled
from swfed.core.ids import room_host
from swfed.core.rooms import PENDING_SEQ
from swfed.storage import peers as peers_db
from swfed.storage import room_writes
from swfed.storage.audit import audit_txn, reject_txn
from swfed.storage.conn import Conn
from swfed.storage.context import Ctx


@attrs.frozen
class Delivery:
    """``delivered``: when each delivered event was queued; ``refused``: their codes."""

    delivered: list[int]
    refused: list[str]


def record_delivery_txn(conn: Conn, ctx: Ctx, dest: str,
                        batch: list[peers_db.Queued], settled: Settled) -> Delivery:
    """Settle each queued event the peer answered for; the rest stay queued.

    Stored (or already had): it leaves the outbox; when ``dest`` hosts the
    room, our event takes the host's place in the order (``sent``).
    Refused for good: it leaves the outbox and is recorded (``fed_rejected``,
    ``sw_audit``); when ``dest`` hosts the room our event is ``refused`` with
    the host's error, and when we host it and ``dest`` refused an invite,
    the invite ends. Transient refusals and unanswered events stay queued.
    """
    tenant, now = ctx.tenant, ctx.now
    done: list[int] = []
    delivered: list[int] = []
    refused: list[str] = []
    hosts: dict[str, str] = {}  # a batch is mostly one room: parse its id once
    for q in batch:
        room_id = q.room_id
        host = hosts.get(room_id)
        if host is None:
            host = hosts[room_id] = room_host(room_id)
        to_host = host == dest
        refusal = settled.refused.get(q.event_id)
        if refusal is not None:
            done.append(q.id)
            refused.append(refusal.code)
            reject_txn(conn, tenant, dest, now, reason=refusal.code, message=refusal.message,
                       event_id=q.event_id, room_id=room_id, action="federation.send.refused")
            error = {"code": refusal.code, "message": refusal.message}
            if to_host:
                room_writes.settle_txn(conn, ctx, room_id, q.event_id, error=error)
            elif (event := q.event()).get("type") == "invite":
                room_writes.end_refused_invite_txn(conn, ctx, event, error, dest)
        elif q.event_id in settled.delivered:
            done.append(q.id)
            delivered.append(q.created_at)
            seq = settled.delivered[q.event_id]
            if to_host and seq is not None and seq < PENDING_SEQ:
                room_writes.settle_txn(conn, ctx, room_id, q.event_id, seq=seq)
    peers_db.outbox_done_txn(conn, tenant.tenant_id, done)
    peers_db.count_txn(conn, tenant.tenant_id, dest, now, sent=len(delivered))
    peers_db.peer_ok_txn(conn, tenant.tenant_id, dest, now)
    audit_txn(conn, tenant, "federation.send", now, outcome="ok", peer=dest,
              details={"events": len(delivered), "refused": len(refused),
                       "transient": len(settled.transient)})
    return Delivery(delivered, refused)
