"""Come back, catch up (DESIGN §6): at start, tell every peer we are here again.

While a server is down, each peer with events for it backs off, up to ten
minutes between attempts. Left alone, a server back after a day away would
wait up to that long for what it missed. So once we listen, we send every
peer we share a room with one cheap signed request -- ``GET
/_scaiwave/federation/v1/probe``, which runs the full authentication of a
federation request and stores nothing. A peer that authenticates a request
from us calls ``Federation.heard_from``: it resets its backoff toward us and
delivers its queue at once (``Sender.heard_from`` wakes the waiting queue).
A peer that accepts our probe is up, so our own queue toward it, which
resumed the backoff it had before the restart (federation.sender), starts
over and delivers at once too.

Bounded: at most ``CONCURRENCY`` announcements in flight, each with a
deadline of ``TIMEOUT_SECONDS``. Failures (the peer is down too, refuses
us, has no key yet) are logged and otherwise ignored: the normal delivery
schedule still applies, and the peer will announce itself when it is back.
Peers our policy refuses, and tenants without federation or a key, are
skipped.
"""

from __future__ import annotations

from typing import Any

import trio

from swfed import logs
from swfed.core.errors import SwfedError
from swfed.core.policy import decide_peer
from swfed.storage.room_peers import room_peers_txn
from swfed.storage.tenants import Tenant

#: Announcements in flight at once.
CONCURRENCY = 8
#: Deadline of one announcement (descriptor fetch if needed, then the probe).
TIMEOUT_SECONDS = 10.0


async def announce(state: Any, tenant: Tenant, peer: str) -> str | None:
    """Send one signed probe to ``peer`` as ``tenant``; None if it answered, else why not."""
    fed = state.federation
    try:
        decide_peer(tenant.policy, peer)
        with trio.move_on_after(TIMEOUT_SECONDS) as scope:
            resp = await fed.get(tenant, peer, "/probe")
        if scope.cancelled_caught:
            return f"SW_FED_PEER_UNREACHABLE: no answer within {TIMEOUT_SECONDS:g} s"
    except SwfedError as exc:
        return f"{exc.code}: {exc.message}"
    if resp.status != 200:
        return f"HTTP {resp.status}"
    result = resp.body.get("result") if isinstance(resp.body, dict) else None
    if not isinstance(result, dict) or result.get("ok") is not True:
        code = result.get("code") if isinstance(result, dict) else None
        return f"{code or 'SW_FED_BAD_RESPONSE'}: the peer did not accept our signed probe"
    return None


async def run_announcer(state: Any,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Announce ourselves to every peer we share a room with, once, then return."""
    fed = state.federation
    try:
        pairs = await state.db.read(room_peers_txn)
    except Exception:  # noqa: BLE001 - the server runs without announcing
        logs.log_exception("federation.announce.failed", reason="cannot read the rooms")
        task_status.started()
        return
    by_id = {t.tenant_id: t for t in state.tenants.all()}
    targets: list[tuple[Tenant, str]] = []
    for tenant_id, peer in pairs:
        tenant = by_id.get(tenant_id)
        if (tenant is None or peer == tenant.server_name or not tenant.policy.federation_enabled
                or fed.keyring.current(tenant) is None):
            continue
        targets.append((tenant, peer))
    task_status.started()
    if not targets:
        return
    limiter = trio.CapacityLimiter(CONCURRENCY)
    failed: list[str] = []
    start = trio.current_time()

    async def one(tenant: Tenant, peer: str) -> None:
        async with limiter:
            try:
                why = await announce(state, tenant, peer)
            except Exception:  # noqa: BLE001 - an announcement never takes the server down
                logs.log_exception("federation.announce.failed", tenant=tenant.server_name,
                                   peer=peer)
                failed.append(peer)
                return
        if why is None:
            fed.sender.heard_from(tenant.tenant_id, peer)  # it answered: ours goes now too
            logs.log("federation.announce.sent", level="debug", tenant=tenant.server_name,
                     peer=peer)
        else:
            failed.append(peer)
            logs.log("federation.announce.failed", level="info", tenant=tenant.server_name,
                     peer=peer, reason=why)

    async with trio.open_nursery() as nursery:
        for tenant, peer in targets:
            nursery.start_soon(one, tenant, peer)
    logs.log("federation.announced", peers=len(targets), reached=len(targets) - len(failed),
             failed=len(failed), seconds=round(trio.current_time() - start, 2))
