"""The federation sender: durable, ordered delivery to each peer (DESIGN §6).

Design, in short:

- Events to send sit in the ``outbox`` table, written in the same
  transaction that stored the event, so nothing acknowledged to a client is
  lost and a restart resumes where the last run stopped.
- One :class:`PeerQueue` task per (tenant, destination) drains its rows in
  order, one ``POST /send`` in flight (two when it is behind), each at most 100 events and
  :data:`~swfed.core.delivery.BATCH_BYTES` (one event always goes, so a big
  one never blocks the queue).
- A row leaves the outbox only when the peer has answered for it: stored
  (or already had it), or refused it for good. A refused event is recorded
  (``fed_rejected``, ``sw_audit``), settled at its origin and dropped, so it
  never blocks the events behind it. A *transient* refusal (the peer could
  not decide now) keeps it queued (:mod:`swfed.core.delivery`).
- Order survives a failed batch: the second ``/send`` in flight names the
  last event of the first (``after``), and the peer takes none of it before
  that one (:mod:`swfed.core.delivery`). When the first failed, or arrived
  second, the second is held back whole and goes again, at once, from the
  oldest queued row (then with nothing before it in flight, so no ``after``).
- A failed attempt (peer down, TLS, 5xx, a whole-request refusal, an answer
  that settles nothing, or anything unexpected — a bug must not kill the
  queue) keeps the batch and waits :func:`swfed.core.backoff.retry_delay`:
  seconds at first, capped at ten minutes, with jitter, or longer when the
  peer says ``Retry-After``. The wait ends early when the peer contacts us
  or an admin asks for a retry. The state is kept in ``peers`` for the
  admin view.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import trio

from swfed import logs
from swfed.core.backoff import retry_delay
from swfed.core.delivery import (
    BATCH_EVENTS,
    Settled,
    classify,
    deferred_for_order,
    send_body,
    take_batch,
)
from swfed.core.errors import FederationError, StorageUnavailable
from swfed.core.policy import decide_peer
from swfed.storage import peers as peers_db
from swfed.storage.context import Ctx
from swfed.storage.delivery import record_delivery_txn

#: How many ``/send`` a queue has in flight when it is behind.
WINDOW = 2


@attrs.define(eq=False)
class _Flight:
    """A batch sent in the background, and its answer once ``done``."""

    batch: list[peers_db.Queued]
    behind: bool
    settled: Settled | None = None
    error: Exception | None = None
    done: trio.Event = attrs.Factory(trio.Event)


class PeerQueue:
    def __init__(self, sender: Sender, tenant_id: int, destination: str) -> None:
        self.sender = sender
        self.tenant_id = tenant_id
        self.destination = destination
        self.wake = trio.Event()
        self.failures = 0
        self.retry_at: float | None = None  # trio clock
        self.last_error: str | None = None
        self.sent = 0
        #: The peer's Retry-After on its last answer, if any.
        self.peer_retry_after: float | None = None
        #: The record of the last batch sent, while it is being written in the
        #: background; the id of its last row; what it raised.
        self._recording: trio.Event | None = None
        self._recording_upto = 0
        self._record_error: Exception | None = None

    def poke(self, *, reset: bool = False) -> None:
        if reset:
            self.failures = 0
            self.retry_at = None
        self.wake.set()

    async def _sleep(self) -> None:
        """Wait for a kick, or until the retry time if backing off."""
        with trio.CancelScope() as scope:
            if self.retry_at is not None:
                scope.deadline = self.retry_at
            await self.wake.wait()
        self.wake = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            await self._run(nursery)

    async def _run(self, nursery: trio.Nursery) -> None:
        """Read, send, record; when behind, two ``/send`` in flight and records overlapping.

        Batches go in order. When the queue is behind (a full batch), the next
        batch is read past the one in flight and sent before its answer
        (:data:`WINDOW`): the peer checks one while it stores the other, and a
        catch-up is paced by both machines' work, not by round trips. Answers
        are taken in order; each settled batch's rows are left to the
        background record (:meth:`_record`, one at a time, in order). At a
        steady pace a batch waits for its record, which lets the next one
        grow; a batch that left something queued makes the next read start
        over from the oldest row once nothing is in flight. A failed attempt
        waits for the ones in flight, then backs off; its rows, and those
        behind them, go again (a peer takes an event it has as a replay).
        """
        state = self.sender.fed.state
        flight: list[_Flight] = []
        while True:
            if not flight and self.retry_at is not None and trio.current_time() < self.retry_at:
                await self._sleep()
                continue
            tenant = next((t for t in state.tenants.all() if t.tenant_id == self.tenant_id),
                          None)
            if tenant is None:
                await self._land(flight)
                await self._recorded()
                await state.tenants.refresh()
                await self._sleep()
                continue
            if len(flight) < WINDOW and (not flight or flight[-1].behind):
                after = flight[-1].batch[-1].id if flight else self._recording_upto
                queued = await state.db.read(peers_db.outbox_batch_txn, self.tenant_id,
                                             self.destination, BATCH_EVENTS, after)
                batch = queued[:take_batch([q.size for q in queued])]
                if batch:
                    behind = len(queued) == BATCH_EVENTS or len(batch) < len(queued)
                    # the second in flight names the last event of the first: the
                    # peer takes it only after that one (core.delivery, ``after``)
                    last = flight[-1].batch[-1] if flight else None
                    after = None if last is None else (last.room_id, last.event_id)
                    flight.append(self._launch(nursery, tenant, batch, behind, after))
                    continue
            if not flight:
                if self._recording is not None:
                    failed = await self._recorded()  # then look again from the oldest row
                    if failed is not None:
                        await self._failed(tenant, _internal_error(failed))
                    continue
                self.retry_at = None
                await self._sleep()
                continue
            first = flight.pop(0)
            await first.done.wait()
            try:
                if first.error is not None:
                    raise first.error
                assert first.settled is not None
                if not first.settled.settles_anything:
                    # held back for the batch before it (which the peer did not have
                    # when this one came): all go again from the oldest row, now
                    await self._land(flight)
                    failed = await self._recorded()
                    if failed is not None:
                        await self._failed(tenant, _internal_error(failed))
                    continue
                failed = await self._recorded()  # the previous batch's, before this one's
                if failed is not None:
                    await self._land(flight)
                    await self._failed(tenant, _internal_error(failed))
                    continue  # its rows, and these, go again after the backoff
                self._start_record(nursery, tenant, first.batch, first.settled)
                if not first.behind or any(q.event_id not in first.settled.delivered
                                           and q.event_id not in first.settled.refused
                                           for q in first.batch):
                    # Not behind: waiting for the record lets the next batch grow (a
                    # /send per few events costs both sides more than the wait).
                    # Some stay queued: read from the oldest again.
                    await self._land(flight)
                    failed = await self._recorded()
                    if failed is not None:
                        await self._failed(tenant, _internal_error(failed))
            except FederationError as exc:
                await self._land(flight)
                await self._recorded()
                await self._failed(tenant, exc)
            except StorageUnavailable:
                raise  # our own disk: the whole sender pauses (swfed.server.run_sender)
            except Exception as exc:  # a bug, or a peer we failed to foresee: back off
                logs.log_exception("federation.send.internal_error", tenant=tenant.server_name,
                                   peer=self.destination)
                await self._land(flight)
                await self._recorded()
                await self._failed(tenant, _internal_error(exc))

    def _launch(self, nursery: trio.Nursery, tenant: Any, batch: list[peers_db.Queued],
                behind: bool, after: tuple[str, str] | None) -> _Flight:
        """Send a batch in the background; its answer waits in the returned flight."""
        flight = _Flight(batch, behind)

        async def attempt() -> None:
            try:
                flight.settled = await self._attempt(tenant, batch, after)
            except Exception as exc:  # the queue's loop handles it, in order
                flight.error = exc
            finally:
                flight.done.set()

        nursery.start_soon(attempt)
        return flight

    @staticmethod
    async def _land(flight: list[_Flight]) -> None:
        """Wait for the batches still in flight, and forget them: their rows stay queued
        (the next read starts from the oldest), and the peer takes them again as the
        replays they are."""
        for f in flight:
            await f.done.wait()
        flight.clear()

    def _start_record(self, nursery: trio.Nursery, tenant: Any, batch: list[peers_db.Queued],
                      settled: Settled) -> None:
        done = trio.Event()
        self._recording, self._recording_upto = done, batch[-1].id
        nursery.start_soon(self._record, tenant, batch, settled, done)

    async def _recorded(self) -> Exception | None:
        """Wait for the background record, if any; what it failed with, if it did.

        A failed record (a bug, logged by :meth:`_record`) leaves its rows
        queued: they go again, and the peer takes them as the replays they
        are. Our storage's trouble is raised: the whole sender pauses.
        """
        done = self._recording
        if done is None:
            return None
        await done.wait()
        self._recording, self._recording_upto = None, 0
        error, self._record_error = self._record_error, None
        if isinstance(error, StorageUnavailable):
            raise error
        return error

    async def _record(self, tenant: Any, batch: list[peers_db.Queued], settled: Settled,
                      done: trio.Event) -> None:
        try:
            await self._delivered(tenant, batch, settled)
        except Exception as exc:  # the queue's loop learns of it at its next _recorded()
            if not isinstance(exc, StorageUnavailable):
                logs.log_exception("federation.send.internal_error",
                                   tenant=tenant.server_name, peer=self.destination)
            self._record_error = exc
        finally:
            done.set()

    async def _attempt(self, tenant: Any, batch: list[peers_db.Queued],
                       after: tuple[str, str] | None = None) -> Settled:
        """One ``/send`` of the batch; raises FederationError when it settles nothing,
        unless it named the batch before it (``after``) and the peer held every event
        back for that one (core.delivery.deferred_for_order): then it goes again."""
        from swfed.federation.service import error_of

        fed = self.sender.fed
        # Our own policy holds the queue (nothing is dropped) while it
        # refuses this peer: tenant-wide off, closed, denied, not allowed.
        decide_peer(tenant.policy, self.destination)
        resp = await fed.post(tenant, self.destination, "/send", None, raw=send_body(
            tenant.server_name, f"{batch[0].id}-{batch[-1].id}", [q.raw for q in batch],
            after))
        self.peer_retry_after = resp.retry_after
        if resp.status != 200:
            raise error_of(resp, self.destination)
        settled = classify([q.event_id for q in batch], resp.body.get("results"))
        if after is not None and deferred_for_order(settled):
            return settled
        if not settled.settles_anything:
            first = next(iter(settled.transient.values()), None)
            if first is not None:
                raise FederationError(f"the peer could not take our events now: "
                                      f"{first.code}: {first.message}", code=first.code,
                                      status=503)
            raise FederationError("the peer's answer to /send settled none of our events",
                                  code="SW_FED_BAD_RESPONSE", status=502)
        return settled

    async def _delivered(self, tenant: Any, batch: list[peers_db.Queued],
                         settled: Settled) -> None:
        state = self.sender.fed.state
        dest = self.destination
        tenant_name = tenant.server_name

        metrics = state.metrics
        labels = {"tenant": tenant_name, "peer": dest}
        now = state.clock()
        ctx = Ctx(tenant, now, self.sender.fed.signer(tenant))
        outcome = await state.db.write(record_delivery_txn, ctx, dest, batch, settled)
        for code in outcome.refused:
            metrics.refused_by_peer.inc(**labels, reason=code)
        metrics.latency.observe_many([max(0, now - created_at) / 1000
                                      for created_at in outcome.delivered], **labels)
        ok, refused = len(outcome.delivered), len(outcome.refused)
        metrics.sent.inc(ok, **labels)
        self.failures = 0
        self.retry_at = None
        self.last_error = None
        self.sent += ok
        logs.log("federation.send.success", tenant=tenant_name, peer=dest, reason="delivered",
                 events=ok, refused=refused)
        if refused:
            logs.log("federation.send.refused", level="warning", tenant=tenant_name, peer=dest,
                     events=refused)

    async def _failed(self, tenant: Any, exc: FederationError) -> None:
        state = self.sender.fed.state
        self.failures += 1
        delay = max(retry_delay(self.failures, random.random()), self.peer_retry_after or 0.0)
        self.peer_retry_after = None
        self.retry_at = trio.current_time() + delay
        self.last_error = f"{exc.code}: {exc.message}"
        state.metrics.send_failures.inc(tenant=tenant.server_name, peer=self.destination,
                                        reason=exc.code)
        now = state.clock()
        await state.db.write(peers_db.peer_failed_txn, tenant.tenant_id, self.destination, now,
                             self.last_error, self.failures, now + int(delay * 1000))
        self.sender.fed.failed_toward(tenant.tenant_id, self.destination)
        logs.log("federation.send.failed", level="warning", tenant=tenant.server_name,
                 peer=self.destination, reason=exc.code, message=exc.message,
                 failures=self.failures, retry_in_s=round(delay, 1))


def _internal_error(exc: Exception) -> FederationError:
    return FederationError(f"internal error while sending ({type(exc).__name__}); the server "
                           "log has the details", code="SW_INTERNAL", status=500)


class Sender:
    """Owns one PeerQueue task per destination with queued events."""

    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self.queues: dict[tuple[int, str], PeerQueue] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for tenant_id, destination in await self.fed.state.db.read(
                    peers_db.outbox_destinations_txn):
                self.kick(tenant_id, destination)
            task_status.started()
            await trio.sleep_forever()

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def queue(self, tenant_id: int, destination: str) -> PeerQueue:
        key = (tenant_id, destination)
        q = self.queues.get(key)
        if q is None:
            q = PeerQueue(self, tenant_id, destination)
            self.queues[key] = q
            if self._nursery is not None:
                self._nursery.start_soon(q.run, name=f"peer-queue {destination}")
        return q

    def kick(self, tenant_id: int, destination: str) -> None:
        self.queue(tenant_id, destination).poke()

    def policy_changed(self, tenant_id: int) -> None:
        """A tenant's policy changed: queues held by it try again now."""
        for (tid, _), q in list(self.queues.items()):
            if tid == tenant_id and q.failures:
                q.poke(reset=True)

    def flag_on(self, tenant_id: int) -> None:
        """A room's federate flag went on at its host: its held rows may go now."""
        for (tid, _), q in list(self.queues.items()):
            if tid == tenant_id:
                q.poke()

    def heard_from(self, tenant_id: int, destination: str) -> None:
        q = self.queues.get((tenant_id, destination))
        if q is not None and q.failures:
            q.poke(reset=True)
