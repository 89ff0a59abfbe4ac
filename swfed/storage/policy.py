"""Writing a tenant's federation policy, audited in the same transaction."""

from __future__ import annotations

from swfed.core.policy import Policy
from swfed.storage.audit import audit_txn
from swfed.storage.conn import Conn
from swfed.storage.tenants import Tenant, set_policy_txn


def update_policy_txn(conn: Conn, tenant: Tenant, new: Policy, actor: str,
                      now: int) -> Tenant:
    updated = set_policy_txn(conn, tenant, new)
    audit_txn(conn, tenant, "federation.policy.update", now, outcome="ok", actor=actor,
              details={"before": tenant.policy.to_json(), "after": new.to_json()})
    return updated
