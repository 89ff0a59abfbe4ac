"""The audit trail (``sw_audit``) and the rejected-events record (sync ``*_txn``)."""

from __future__ import annotations

import json
from typing import Any

from swfed.storage.conn import Conn
from swfed.storage.tenants import Tenant


def audit_txn(conn: Conn, tenant: Tenant, action: str, now: int, *,
              outcome: str, actor: str | None = None, peer: str | None = None,
              event_id: str | None = None, room_id: str | None = None,
              reason: str | None = None, details: dict[str, Any] | None = None) -> None:
    conn.execute(
        "INSERT INTO sw_audit (tenant_id, action, actor, peer, event_id, room_id, outcome,"
        " reason, details, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant.tenant_id, action, actor, peer, event_id, room_id, outcome, reason,
         None if details is None else json.dumps(details, sort_keys=True), now))


def accepted_audit_txn(conn: Conn, tenant: Tenant, now: int, peer: str,
                       events: list[tuple[str, str]]) -> None:
    """One ``federation.event.accepted`` row per (event_id, room_id), in one statement."""
    conn.executemany(
        "INSERT INTO sw_audit (tenant_id, action, actor, peer, event_id, room_id, outcome,"
        " reason, details, created_at) VALUES (?, 'federation.event.accepted', NULL, ?, ?, ?,"
        " 'ok', NULL, NULL, ?)",
        [(tenant.tenant_id, peer, event_id, room_id, now) for event_id, room_id in events])


def reject_txn(conn: Conn, tenant: Tenant, peer: str, now: int, *,
               reason: str, message: str, event_id: str | None = None,
               room_id: str | None = None, action: str = "federation.event.rejected") -> None:
    """Record a refused federation event: a rejected row and an audit row."""
    conn.execute(
        "INSERT INTO fed_rejected (tenant_id, peer, event_id, room_id, reason, message,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tenant.tenant_id, peer, event_id, room_id, reason, message[:500], now))
    audit_txn(conn, tenant, action, now, outcome="refused", peer=peer, event_id=event_id,
              room_id=room_id, reason=reason, details={"message": message[:500]})


def local_refusal_txn(conn: Conn, tenant: Tenant, now: int, *, actor: str,
                      peer: str | None, room_id: str | None, reason: str,
                      details: dict[str, Any]) -> None:
    """Our own user's action that federation policy (ours or the peer's) refused."""
    audit_txn(conn, tenant, "federation.local.refused", now, outcome="refused", actor=actor,
              peer=peer, room_id=room_id, reason=reason, details=details)


def _page(conn: Conn, table: str, tenant: Tenant, filters: dict[str, Any],
          before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    where = ["tenant_id = ?", "id < ?"]
    args: list[Any] = [tenant.tenant_id, before if before is not None else 2**62]
    for column, value in filters.items():
        if value is None:
            continue
        if column == "action_prefix":
            where.append("action LIKE ? ESCAPE '\\'")
            args.append(value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                        + "%")
        else:
            where.append(f"{column} = ?")
            args.append(value)
    rows = conn.execute(f"SELECT * FROM {table} WHERE {' AND '.join(where)}"
                        " ORDER BY id DESC LIMIT ?", (*args, limit + 1)).fetchall()
    out = []
    for r in rows[:limit]:
        item = {k: r[k] for k in r.keys() if k != "tenant_id"}
        if "details" in item and item["details"] is not None:
            item["details"] = json.loads(item["details"])
        out.append(item)
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return out, nxt


def rejected_page_txn(conn: Conn, tenant: Tenant, peer: str | None,
                      reason: str | None, before: int | None,
                      limit: int) -> tuple[list[dict[str, Any]], int | None]:
    return _page(conn, "fed_rejected", tenant, {"peer": peer, "reason": reason}, before, limit)


def audit_page_txn(conn: Conn, tenant: Tenant, action: str | None,
                   peer: str | None, before: int | None,
                   limit: int) -> tuple[list[dict[str, Any]], int | None]:
    return _page(conn, "sw_audit", tenant, {"action_prefix": action, "peer": peer}, before,
                 limit)
