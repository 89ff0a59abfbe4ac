"""Gap repair: a member server fetches what it missed of a room from its host.

The host's sequence numbers are contiguous per room, and each copy keeps
``synced_seq``: every seq up to it is here. A copy repairs itself, without
an admin, whenever it may have missed something:

- a relayed event beyond ``synced_seq + 1`` arrives (a gap). The host often
  has the missing ones in flight already (two ``/send`` at once when its
  queue is behind, which may arrive in either order), so repair first gives
  them :data:`GAP_SECONDS` and fetches only if the gap is still there;
- one of our users (re)joins and the host's answer is beyond our mark
  (events posted while none of our users was in the room);
- our federate flag of the room is switched on again (what was refused
  while it was off);
- the server starts (whatever happened while it was down).

Repair asks the host for the events after our mark (``/backfill?after=``),
verifies each like backfill, and stores them in the host's order with
their effects; it repeats until the mark reaches the host's ``last_seq``.
When the host's own deliveries move the mark meanwhile (its queue after our
restart), repair steps aside until the mark rests, instead of fetching and
checking every event twice.
One :class:`Repairer` task per process works through the requested rooms,
one at a time per room; a failed attempt is retried with backoff.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import trio

from swfed import logs
from swfed.core.backoff import retry_delay
from swfed.core.errors import FederationError, SwfedError
from swfed.core.rooms import Room
from swfed.federation import history
from swfed.storage import events as events_db
from swfed.storage import protocol
from swfed.storage import rooms as rooms_db
from swfed.storage.context import Ctx
from swfed.storage.tenants import Tenant

PAGE = 100
#: While the host's deliveries move a room's mark, repair looks again this often (s).
YIELD_SECONDS = 1.0
#: How long a gap seen in the host's deliveries is given to close by itself (s).
GAP_SECONDS = 0.5


class Repairer:
    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self._wanted: set[tuple[int, str]] = set()
        self._running: set[tuple[int, str]] = set()
        self._watch_first: set[tuple[int, str]] = set()
        self._gap_first: set[tuple[int, str]] = set()
        self._failures: dict[tuple[int, str], int] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Repair every room we are in that is hosted elsewhere, then what is asked."""
        state = self.fed.state
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for tenant in state.tenants.all():
                for room in await state.db.read(rooms_db.remote_rooms_txn, tenant):
                    self.request(tenant, room.room_id, watch_first=True)
            task_status.started()
            await trio.sleep_forever()

    def busy(self, tenant: Tenant) -> bool:
        """Whether a repair of one of the tenant's rooms is under way."""
        return any(tid == tenant.tenant_id for tid, _ in self._running)

    def request(self, tenant: Tenant, room_id: str, *, watch_first: bool = False,
                gap: bool = False) -> None:
        """Make sure the room is repaired soon (after the current attempt, if one runs).

        ``watch_first``: at start, when the host's queue is likely bringing what
        we missed, watch the mark for a moment before fetching anything.
        ``gap``: a write saw events beyond the mark (``ctx.repairs``); fetch
        only if, after :data:`GAP_SECONDS`, the copy still has a gap.
        """
        key = (tenant.tenant_id, room_id)
        if watch_first:
            self._watch_first.add(key)
        elif gap:
            self._gap_first.add(key)
        self._wanted.add(key)
        if key not in self._running and self._nursery is not None:
            self._running.add(key)
            self._nursery.start_soon(self._repair, tenant, room_id)

    async def _repair(self, tenant: Tenant, room_id: str) -> None:
        key = (tenant.tenant_id, room_id)
        try:
            while key in self._wanted:
                self._wanted.discard(key)
                try:
                    await self._catch_up(tenant, room_id)
                    self._failures.pop(key, None)
                except Exception as exc:  # the host's refusal, our full disk, or a bug
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                    delay = retry_delay(failures, random.random())
                    if not isinstance(exc, SwfedError):
                        logs.log_exception("federation.repair.internal_error",
                                           tenant=tenant.server_name, room_id=room_id)
                        exc = SwfedError("internal error; the log has the details",
                                         code="SW_INTERNAL", status=500)
                    logs.log("federation.repair.failed", level="warning",
                             tenant=tenant.server_name, room_id=room_id, reason=exc.code,
                             message=exc.message, retry_in_s=round(delay, 1))
                    await trio.sleep(delay)
                    self._wanted.add(key)
        finally:
            self._running.discard(key)

    async def _catch_up(self, tenant: Tenant, room_id: str) -> None:
        state = self.fed.state
        key = (tenant.tenant_id, room_id)
        fetched = 0
        expected: int | None = None  # the mark as our last page left it
        gap_only = key in self._gap_first and key not in self._watch_first
        self._gap_first.discard(key)
        if gap_only or key in self._watch_first:
            self._watch_first.discard(key)
            room = await state.db.read(rooms_db.room_txn, tenant, room_id)
            expected = None if room is None else room.synced_seq
            await trio.sleep(GAP_SECONDS if gap_only else YIELD_SECONDS)
        while True:
            room, top = await state.db.read(_room_and_top_txn, tenant, room_id)
            if room is None or room.host == tenant.server_name or room.synced_seq == 0:
                return
            if gap_only and top <= room.synced_seq:
                return  # the deliveries in flight closed it: nothing to fetch
            if expected is not None and room.synced_seq > expected:
                # The host's own deliveries moved the mark meanwhile (after a
                # restart its queue brings what we missed): fetching the same
                # events as well would only do the work twice. Step aside while
                # they flow; once the mark rests, fetch whatever is still missing.
                expected = room.synced_seq
                await trio.sleep(YIELD_SECONDS)
                continue
            page = await history.fetch(self.fed, tenant, room.host, room_id,
                                       after=room.synced_seq, limit=PAGE)
            gap_only = False  # fetching: on to the host's last_seq, like any repair
            ctx = Ctx(tenant, state.clock(), self.fed.signer(tenant))
            synced = await state.db.write(protocol.store_repair_txn, ctx, room_id, page.events)
            expected = synced
            fetched += len(page.events)
            for event, exc in page.refused:
                logs.log("federation.event_rejected", level="warning",
                         tenant=tenant.server_name, peer=room.host, reason=exc.code,
                         message=exc.message, event_id=event.get("event_id"), repair=True)
            caught_up = page.last_seq is None or synced >= page.last_seq
            if caught_up or synced <= room.synced_seq:
                if fetched:
                    logs.log("federation.repair", tenant=tenant.server_name, peer=room.host,
                             room_id=room_id, events=fetched, synced_seq=synced,
                             host_last_seq=page.last_seq)
                if not caught_up and page.refused:
                    exc = page.refused[0][1]
                    raise FederationError(f"could not take an event of the gap: {exc.message}",
                                          code=exc.code, status=exc.status)
                # else caught up, or held by our own event the host has not answered
                # for yet: its answer moves the mark on (and asks again if needed)
                return


def _room_and_top_txn(conn: sqlite3.Connection, tenant: Tenant,
                      room_id: str) -> tuple[Room | None, int]:
    """Our copy of the room, and the highest host seq it holds (beyond the mark: a gap)."""
    return (rooms_db.room_txn(conn, tenant, room_id),
            events_db.max_host_seq_txn(conn, tenant, room_id))
