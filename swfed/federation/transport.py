"""The sender's transport (:class:`swfed.federation.sender.Transport`) in production.

A ``/send`` goes as every request to a peer does: the peer's descriptor known
first (protocol versions, its keys), signed as the tenant, through the one
outbound client (:mod:`swfed.federation.client`). The queue reads the
answer: its status, its results, its ``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swfed.federation.client import FedResponse
from swfed.storage.tenants import Tenant

if TYPE_CHECKING:
    from swfed.federation.service import Federation


class FederationTransport:
    def __init__(self, fed: Federation) -> None:
        self._fed = fed

    async def send(self, tenant: Tenant, destination: str, body: bytes) -> FedResponse:
        """Raises FederationError when no answer came (discovery, unreachable, TLS, …)."""
        return await self._fed.post(tenant, destination, "/send", None, raw=body)
