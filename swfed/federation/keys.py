"""Our signing keys: the key ring, generation, rotation, and the key scheduler.

Keys live in the ``signing_keys`` table (DESIGN §3). The running server
holds a :class:`KeyRing` in memory and reloads it every
``RELOAD_SECONDS``, so a ``swfed admin federation key rotate`` run from the
CLI is picked up without a restart. The scheduler rotates a key when it is
``key_rotation_days`` old and wipes the private half of retired keys once
their ``key_overlap_days`` overlap has ended; the public half stays in the
table and in the descriptor for good, with the time it stopped signing, so
that events it signed verify however old they are (rules: swfed.core.keys).
Its transactions live in :mod:`swfed.storage.keys`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from swfed import logs
from swfed.core.descriptor import build_descriptor
from swfed.core.errors import StorageUnavailable
from swfed.core.keys import rotation_due
from swfed.core.signing import KeyPair, sign_json
from swfed.storage import keys as keys_db
from swfed.storage.keys import TenantKeys, load_tenant_keys_txn, new_key_txn
from swfed.storage.tenants import Tenant

__all__ = ["KeyRing", "TenantKeys", "ensure_tenant_keys", "load_tenant_keys_txn",
           "new_key_txn"]

RELOAD_SECONDS = 2.0


class KeyRing:
    """Every tenant's keys, in memory; reloaded from the table periodically."""

    def __init__(self) -> None:
        self._by_tenant: dict[int, TenantKeys] = {}

    def set(self, tenant: Tenant, keys: TenantKeys) -> None:
        self._by_tenant[tenant.tenant_id] = keys

    def get(self, tenant: Tenant) -> TenantKeys:
        return self._by_tenant.get(tenant.tenant_id, TenantKeys(None, None, ()))

    def current(self, tenant: Tenant) -> KeyPair | None:
        return self.get(tenant).current

    def signer(self, tenant: Tenant) -> Callable[..., dict[str, Any]] | None:
        """``sign(obj, signable=None)``: obj signed as the tenant (signable: its bytes)."""
        keypair = self.current(tenant)
        if keypair is None:
            return None
        name = tenant.server_name

        def sign(obj: dict[str, Any], signable: bytes | None = None) -> dict[str, Any]:
            return sign_json(obj, name, keypair, signable=signable)

        return sign

    def descriptor(self, tenant: Tenant, now: int) -> dict[str, Any]:
        """Our descriptor: the current key and every retired one (core.keys.published)."""
        keys = self.get(tenant)
        return build_descriptor(tenant.server_name, keys.current, list(keys.old), now)


async def ensure_tenant_keys(state: Any, tenant: Tenant) -> TenantKeys:
    """Load a tenant's keys into the ring: generate the first one (if configured)
    and rotate a key that is due. Serialised per process by ``fed.key_lock``.
    """
    fed = state.federation
    cfg = state.config.federation
    async with fed.key_lock:
        keys = await state.db.read(load_tenant_keys_txn, tenant)
        if keys.current is None and not keys.old and cfg.generate_key_on_start:
            kp = await state.db.write(new_key_txn, tenant, state.clock(),
                                      cfg.key_overlap_days, rotate=False,
                                      actor="generate_key_on_start")
            logs.log("federation.key.generated", tenant=tenant.server_name, key_id=kp.key_id)
            keys = await state.db.read(load_tenant_keys_txn, tenant)
        if rotation_due(keys.current_created_at, state.clock(), cfg.key_rotation_days):
            kp = await state.db.write(new_key_txn, tenant, state.clock(),
                                      cfg.key_overlap_days, rotate=True, actor="key-scheduler")
            logs.log("federation.key.rotated", tenant=tenant.server_name, key_id=kp.key_id,
                     by="scheduler")
            keys = await state.db.read(load_tenant_keys_txn, tenant)
        fed.keyring.set(tenant, keys)
        return keys


async def run_key_scheduler(
        state: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Reload keys, rotate the ones that are due, wipe expired private halves."""
    fed = state.federation
    started = False
    while True:
        try:
            await state.tenants.refresh()
            for tenant in state.tenants.all():
                await ensure_tenant_keys(state, tenant)
            wiped = await state.db.write(keys_db.wipe_expired_seeds_txn, state.clock())
            if wiped:
                logs.log("federation.key.expired", count=wiped)
        except StorageUnavailable:
            pass  # the database logs it (storage.unavailable); try again next pass
        except Exception:  # noqa: BLE001 - the scheduler must outlive one bad pass
            logs.log_exception("federation.key.scheduler_failed")
        fed.scheduler_heartbeat = trio.current_time()
        if not started:
            started = True
            task_status.started()
        await trio.sleep(RELOAD_SECONDS)
