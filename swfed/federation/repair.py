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

A host may lie, and repair must stay bounded when it does:

- Every page is checked before anything is stored
  (:func:`swfed.core.rooms.check_repair_page`): no more events than asked,
  each after the mark and in order, a ``last_seq`` a room can have, and a
  page shorter than asked only at the host's end (a host claiming more than
  it delivers). A seq we hold already names one event (a unique index): an
  event under it is refused. A lie, a page that does not move the mark (when
  no event of ours holds it), or a gap event refused ends the attempt as a
  failure: the room is tried again with the sender's backoff (2 s doubling
  to 10 minutes), not polled.
- A run fetches at most :data:`RUN_PAGES` pages for :data:`RUN_SECONDS`;
  a repair that still has more to fetch (the host delivering full pages)
  goes on after :data:`BUDGET_PAUSE_SECONDS`. All rooms of one host share
  :data:`PEER_PAGES` (pages a second, and a burst).
- The refusals of a page are counted, and logged at most once a second per
  (tenant, host, reason) after a burst of ten, with how many were held back
  (the gate of refusals before authentication, ``Limits.log``).
"""

from __future__ import annotations

import random
from typing import Any

import trio

from swfed import logs
from swfed.core.backoff import retry_delay
from swfed.core.errors import FederationError, SwfedError
from swfed.core.ratelimit import KeyedLimiter, LogGate, Rate
from swfed.core.rooms import Room, check_repair_page, unsigned_seq
from swfed.federation import history
from swfed.storage import events as events_db
from swfed.storage import room_writes
from swfed.storage import rooms as rooms_db
from swfed.storage.context import Ctx
from swfed.storage.tenants import Tenant

PAGE = 100
#: While the host's deliveries move a room's mark, repair looks again this often (s).
YIELD_SECONDS = 1.0
#: How long a gap seen in the host's deliveries is given to close by itself (s).
GAP_SECONDS = 0.5
#: One run of a room's repair fetches at most this many pages (10,000 events) ...
RUN_PAGES = 100
#: ... for at most this long (s); then it goes on after BUDGET_PAUSE_SECONDS.
RUN_SECONDS = 60.0
BUDGET_PAUSE_SECONDS = 5.0
#: Pages a second (and a burst) fetched from one host, over all its rooms.
PEER_PAGES = Rate(per_second=10.0, burst=100.0)
#: Log lines of refused repair events per (tenant, host, reason): as Limits.log.
LOG_RATE = Rate(per_second=1.0, burst=10.0)


class _BudgetSpent(Exception):
    """A run fetched its pages (or time) with more to fetch: go on after a pause."""


class Repairer:
    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self._wanted: set[tuple[int, str]] = set()
        self._running: set[tuple[int, str]] = set()
        self._watch_first: set[tuple[int, str]] = set()
        self._gap_first: set[tuple[int, str]] = set()
        self._failures: dict[tuple[int, str], int] = {}
        self._nursery: trio.Nursery | None = None
        self._pages = KeyedLimiter(PEER_PAGES, max_keys=10_000)  # per (tenant, host)
        self._log_gate = LogGate(LOG_RATE)

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
        ``gap``: a write saw events beyond the mark (the commit hook, swfed.storage.touched); fetch
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
                except _BudgetSpent:
                    self._failures.pop(key, None)
                    await trio.sleep(BUDGET_PAUSE_SECONDS)
                    self._wanted.add(key)
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
        pages = 0
        started = trio.current_time()
        while True:
            room, top = await state.db.read(room_writes.room_and_top_txn, tenant, room_id)
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
            if pages >= RUN_PAGES or trio.current_time() - started > RUN_SECONDS:
                self._log_run(tenant, room, fetched, room.synced_seq, None, budget_spent=True)
                raise _BudgetSpent
            await self._page_turn(tenant, room.host)
            pages += 1
            mark = room.synced_seq
            page = await history.fetch(self.fed, tenant, room.host, room_id,
                                       after=mark, limit=PAGE)
            gap_only = False  # fetching: on to the host's last_seq, like any repair
            refused = list(page.refused)
            try:
                check_repair_page(mark, PAGE, page.seqs, page.last_seq)
            except FederationError:
                self._log_refused(tenant, room.host, room_id, refused)
                self._log_run(tenant, room, fetched, mark, page.last_seq)
                raise
            assert page.last_seq is not None
            ctx = Ctx(tenant, state.clock(), self.fed.signer(tenant))
            synced, taken = await state.db.write(room_writes.store_repair_txn, ctx, room_id,
                                                 page.events)
            expected = synced
            fetched += len(page.events)
            refused += [({"event_id": event_id}, exc) for event_id, _, exc in taken]
            self._log_refused(tenant, room.host, room_id, refused)
            if synced >= page.last_seq:
                self._log_run(tenant, room, fetched, synced, page.last_seq)
                return
            if refused:
                self._log_run(tenant, room, fetched, synced, page.last_seq)
                exc = refused[0][1]
                raise FederationError(f"could not take an event of the gap: {exc.message}",
                                      code=exc.code, status=exc.status)
            if synced <= mark:
                self._log_run(tenant, room, fetched, synced, page.last_seq)
                if await self._held_by_ours(tenant, room_id, page, mark):
                    # our own event the host has not answered for yet: its answer
                    # moves the mark on (and asks again if needed)
                    return
                raise FederationError(
                    f"the host's repair page after seq {mark} moved nothing (last_seq "
                    f"{page.last_seq}): the host claims more than it delivers",
                    code="SW_FED_BAD_RESPONSE", status=502)

    async def _page_turn(self, tenant: Tenant, host: str) -> None:
        """Wait until one more page may be fetched from ``host`` (:data:`PEER_PAGES`)."""
        while (wait := self._pages.check((tenant.tenant_id, host), trio.current_time())) > 0:
            await trio.sleep(wait)

    async def _held_by_ours(self, tenant: Tenant, room_id: str, page: history.Page,
                            mark: int) -> bool:
        """Is the page's event right after our mark one of ours still pending?"""
        nxt = next((e for e in page.events if unsigned_seq(e) == mark + 1), None)
        return nxt is not None and bool(await self.fed.state.db.read(
            events_db.is_pending_txn, tenant, room_id, str(nxt.get("event_id"))))

    def _log_refused(self, tenant: Tenant, host: str, room_id: str,
                     refused: list[tuple[dict[str, Any], FederationError]]) -> None:
        """Count every refused event; log a few (:data:`LOG_RATE` per host and reason)."""
        metrics = self.fed.state.metrics
        now = trio.current_time()
        for event, exc in refused:
            metrics.rejected.inc(tenant=tenant.server_name, peer=host, reason=exc.code)
            suppressed = self._log_gate.admit((tenant.tenant_id, host, exc.code), now)
            if suppressed is not None:
                event_id = event.get("event_id") if isinstance(event, dict) else None
                logs.log("federation.event_rejected", level="warning",
                         tenant=tenant.server_name, peer=host, reason=exc.code,
                         message=exc.message[:300], room_id=room_id, repair=True,
                         event_id=str(event_id)[:100] if event_id is not None else None,
                         suppressed=suppressed)

    @staticmethod
    def _log_run(tenant: Tenant, room: Room, fetched: int, synced: int,
                 host_last_seq: int | None, *, budget_spent: bool = False) -> None:
        if fetched or budget_spent:
            logs.log("federation.repair", tenant=tenant.server_name, peer=room.host,
                     room_id=room.room_id, events=fetched, synced_seq=synced,
                     host_last_seq=host_last_seq, budget_spent=budget_spent)

