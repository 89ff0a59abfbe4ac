"""What a write transaction acts as: :class:`Ctx` (tenant, clock, signer, wake-ups)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from swfed.storage.tenants import Tenant


@attrs.define
class Ctx:
    """What a write transaction acts as: tenant, clock, signer; what it leaves.

    ``sign`` signs an event with the tenant's current key (None: no key,
    so nothing can federate). ``kicks`` collects the destinations that got
    new outbox rows, so the sender can be woken after the commit;
    ``repairs`` the rooms hosted elsewhere in which a gap was seen, so gap
    repair can start after the commit.
    """

    tenant: Tenant
    now: int
    sign: Callable[..., dict[str, Any]] | None = None
    kicks: set[str] = attrs.Factory(set)
    repairs: set[str] = attrs.Factory(set)

    @property
    def me(self) -> str:
        return self.tenant.server_name
