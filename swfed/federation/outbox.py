"""The sender's store (:class:`swfed.federation.sender.QueueStore`) over the database.

Each call is one named transaction of :mod:`swfed.storage`: the outbox reads
(``peers.outbox_destinations_txn``, ``peers.outbox_batch_txn``), the record
of an answer (``delivery.record_delivery_txn``, which also clears the retry
state), a failure with its retry state (``peers.peer_failed_txn``) and the
retry state read back at start (``peers.retry_state_txn``). No SQL here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swfed.core.backoff import RetryState
from swfed.core.delivery import Settled
from swfed.storage import peers as peers_db
from swfed.storage.context import Ctx
from swfed.storage.delivery import Delivery, record_delivery_txn
from swfed.storage.peers import Queued
from swfed.storage.tenants import Tenant

if TYPE_CHECKING:
    from swfed.storage.db import Database

#: The tenant's signer, or None while it has no key (Federation.signer).
Signer = Callable[[Tenant], "Callable[..., dict[str, Any]] | None"]


class OutboxStore:
    def __init__(self, db: Database, signer: Signer) -> None:
        self._db = db
        self._signer = signer

    async def destinations(self) -> list[tuple[int, str]]:
        return await self._db.read(peers_db.outbox_destinations_txn)

    async def batch(self, tenant_id: int, destination: str, limit: int,
                    after: int) -> list[Queued]:
        return await self._db.read(peers_db.outbox_batch_txn, tenant_id, destination, limit,
                                   after)

    async def record_delivery(self, tenant: Tenant, destination: str, batch: list[Queued],
                              settled: Settled, now_ms: int) -> Delivery:
        ctx = Ctx(tenant, now_ms, self._signer(tenant))
        return await self._db.write(record_delivery_txn, ctx, destination, batch, settled)

    async def record_failure(self, tenant_id: int, destination: str, now_ms: int, error: str,
                             retry: RetryState) -> None:
        assert retry.retry_at_ms is not None, "a failure always says when to try again"
        await self._db.write(peers_db.peer_failed_txn, tenant_id, destination, now_ms, error,
                             retry.failures, retry.retry_at_ms)

    async def retry_state(self, tenant_id: int, destination: str) -> RetryState:
        return await self._db.read(peers_db.retry_state_txn, tenant_id, destination)
