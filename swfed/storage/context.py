"""What a write transaction acts as: :class:`Ctx` (tenant, clock, signer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from swfed.storage.tenants import Tenant


@attrs.define
class Ctx:
    """What a write transaction acts as: tenant, clock, signer.

    ``sign`` signs an event with the tenant's current key (None: no key,
    so nothing can federate). What the write leaves for others to act on
    (outbox rows, a moved stream, a gap to repair) the connection collects
    (swfed.storage.touched), and the commit hook wakes it.
    """

    tenant: Tenant
    now: int
    sign: Callable[..., dict[str, Any]] | None = None

    @property
    def me(self) -> str:
        return self.tenant.server_name
