"""The federation sender: durable, ordered delivery to each peer (DESIGN §6).

The outbox
    Events to send sit in the ``outbox`` table, written in the same
    transaction that stored the event, so nothing acknowledged to a client is
    lost and a restart resumes where the last run stopped. One
    :class:`PeerQueue` task per (tenant, destination) drains its rows in order;
    the commit hook (``Federation.committed``) wakes the queues that got rows.

Batches
    One ``POST /send`` in flight, two when the queue is behind (:data:`WINDOW`),
    each at most 100 events and :data:`~swfed.core.delivery.BATCH_BYTES` (one
    event always goes, so a big one never blocks the queue).

Settling
    A row leaves the outbox only when the peer has answered for it: stored
    (or already had it), or refused it for good. A refused event is recorded
    (``fed_rejected``, ``sw_audit``), settled at its origin and dropped, so it
    never blocks the events behind it. A *transient* refusal (the peer could
    not decide now) keeps it queued (:mod:`swfed.core.delivery`).

Order
    Order survives a failed batch: the second ``/send`` in flight names the
    last event of the first (``after``), and the peer takes none of it before
    that one (:mod:`swfed.core.delivery`). When the first failed, or arrived
    second, the second is held back whole and goes again, at once, from the
    oldest queued row (then with nothing before it in flight, so no ``after``).

Backoff, and what survives a restart
    A failed attempt (peer down, TLS, 5xx, a whole-request refusal, an answer
    that settles nothing, or anything unexpected -- a bug must not kill the
    queue) keeps the batch and waits :func:`swfed.core.backoff.retry_delay`:
    2 s, 4 s, 8 s ... capped at ten minutes, with jitter, or the peer's
    ``Retry-After`` when that is longer. The retry state
    (:class:`~swfed.core.backoff.RetryState`: failures in a row, and when the
    next attempt is due in wall-clock ms) is written to ``peers`` with each
    failure, and cleared with each answer that settles something and with
    each verified contact from the peer. A queue reads it back when it starts
    -- at server start, after a storage pause, or when a peer gets its first
    event since: it waits out the rest of the wait
    (:func:`~swfed.core.backoff.wait_left`; nothing if it is overdue), and its
    next failure continues the schedule from the stored count. A server
    restarted while a peer is down thus neither hammers it at once nor starts
    over at 2 s. The wait ends early, and the schedule starts over, when the
    peer contacts us or answers our start-up announcement
    (:meth:`Sender.heard_from`), an admin asks for a retry, or the policy
    changes.

Parts
    A queue is given what it uses (:class:`Parts`): a :class:`Transport` that
    carries a ``/send`` body, a :class:`QueueStore` over the few storage calls
    it makes, the :class:`Tenants` directory, the metrics, a wall clock for
    the times it stores, and the random source of the jitter. Its waits use
    Trio's clock (``trio.current_time``), which a test replaces with
    ``autojump_clock``. The production parts are
    :class:`swfed.federation.transport.FederationTransport` and
    :class:`swfed.federation.outbox.OutboxStore`;
    ``tests/federation/test_peer_queue.py`` runs a queue against fakes and
    asserts its exact retry times.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from swfed import logs
from swfed.core.backoff import RetryState, after_failure, wait_left
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
from swfed.federation.client import FedResponse, error_of
from swfed.metrics import Metrics
from swfed.storage.delivery import Delivery
from swfed.storage.peers import Queued
from swfed.storage.tenants import Tenant

#: How many ``/send`` a queue has in flight when it is behind.
WINDOW = 2


class Transport(Protocol):
    """Carries one ``/send`` to a peer."""

    async def send(self, tenant: Tenant, destination: str, body: bytes) -> FedResponse:
        """POST ``body`` (canonical JSON) to the peer's ``/send``, signed as ``tenant``;
        its answer, whatever the status. Raises FederationError when none came."""
        ...


class QueueStore(Protocol):
    """The storage a queue uses: the outbox, the record of answers, the retry state."""

    async def destinations(self) -> list[tuple[int, str]]:
        """(tenant_id, destination) of every queue with rows."""
        ...

    async def batch(self, tenant_id: int, destination: str, limit: int,
                    after: int) -> list[Queued]:
        """The next queued rows, in order, after the row id ``after``."""
        ...

    async def record_delivery(self, tenant: Tenant, destination: str, batch: list[Queued],
                              settled: Settled, now_ms: int) -> Delivery:
        """Settle what the answer settled; clear the retry state (the peer answered)."""
        ...

    async def record_failure(self, tenant_id: int, destination: str, now_ms: int, error: str,
                             retry: RetryState) -> None:
        """A failed attempt: its error, and the retry state read back at start."""
        ...

    async def retry_state(self, tenant_id: int, destination: str) -> RetryState:
        """The retry state as the last failure (or answer) left it."""
        ...


class Tenants(Protocol):
    def by_id(self, tenant_id: int) -> Tenant | None: ...

    async def refresh(self) -> None: ...


def _nobody_told(tenant_id: int, destination: str) -> None:
    pass


@attrs.frozen
class Parts:
    """What the sender's queues use, given (not reached for)."""

    transport: Transport
    store: QueueStore
    tenants: Tenants
    metrics: Metrics
    #: Wall clock, ms since the epoch: the times stored (records, retry state).
    wall_ms: Callable[[], int]
    #: Uniform in [0, 1), for the jitter (seeded in tests).
    rand: Callable[[], float] = random.random
    #: Told of each failed attempt, after it is stored (Federation.failed_toward).
    on_failure: Callable[[int, str], None] = _nobody_told


@attrs.define(eq=False)
class _Flight:
    """A batch sent in the background, and its answer once ``done``."""

    batch: list[Queued]
    behind: bool
    settled: Settled | None = None
    error: Exception | None = None
    done: trio.Event = attrs.Factory(trio.Event)

    def answer(self) -> Settled:
        """What the peer's answer settled; raises what the attempt raised."""
        if self.error is not None:
            raise self.error
        assert self.settled is not None
        return self.settled

    def left_queued(self) -> bool:
        """Some of the batch is neither delivered nor refused for good (it stays queued)."""
        settled = self.answer()
        return any(q.event_id not in settled.delivered and q.event_id not in settled.refused
                   for q in self.batch)


class PeerQueue:
    """Delivery to one peer as one tenant: the outbox's rows for it, in order."""

    def __init__(self, parts: Parts, tenant_id: int, destination: str) -> None:
        self.parts = parts
        self.tenant_id = tenant_id
        self.destination = destination
        self.wake = trio.Event()
        self.retry = RetryState()
        #: When the next attempt is due (trio clock), while backing off.
        self.retry_at: float | None = None
        #: The stored retry state has been read back (:meth:`_resume`).
        self.resumed = False
        self._resets = 0
        self.last_error: str | None = None
        self.sent = 0
        #: The peer's Retry-After on its last answer, if any.
        self.peer_retry_after: float | None = None
        #: The record of the last batch sent, while it is being written in the
        #: background; the id of its last row; what it raised.
        self._recording: trio.Event | None = None
        self._recording_upto = 0
        self._record_error: Exception | None = None

    @property
    def failures(self) -> int:
        return self.retry.failures

    @property
    def backing_off(self) -> bool:
        """It failed last time, or may have before a restart (not read back yet)."""
        return bool(self.retry.failures) or not self.resumed

    def poke(self, *, reset: bool = False) -> None:
        """Look at the outbox again now; ``reset``: and start the backoff over."""
        if reset:
            self.retry = RetryState()
            self.retry_at = None
            self._resets += 1
        self.wake.set()

    def _retry_ahead(self) -> bool:
        """The retry time is still ahead (trio clock)."""
        return self.retry_at is not None and trio.current_time() < self.retry_at

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
        """Resume the backoff, then read, send, record, for as long as the sender runs.

        Batches go in order. When the queue is behind (a full batch), the next
        batch is read past the one in flight and sent before its answer
        (:data:`WINDOW`): the peer checks one while it stores the other, and a
        catch-up is paced by both machines' work, not by round trips. Answers
        are taken in order (:meth:`_take_answer`); each settled batch's rows
        are left to the background record (:meth:`_record`, one at a time, in
        order). A failed attempt waits for the ones in flight, then backs off;
        its rows, and those behind them, go again (a peer takes an event it
        has as a replay).
        """
        await self._resume()
        flight: list[_Flight] = []
        while True:
            if not flight and self._retry_ahead():
                await self._sleep()
                continue
            tenant = self.parts.tenants.by_id(self.tenant_id)
            if tenant is None:
                await self._tenant_gone(flight)
            elif await self._send_next(nursery, tenant, flight):
                continue  # one more in flight; perhaps another
            elif flight:
                await self._take_answer(nursery, tenant, flight)
            else:
                await self._idle(tenant)

    async def _resume(self) -> None:
        """Read the stored retry state back: wait the rest of its wait, keep its count."""
        resets = self._resets
        tenant = self.parts.tenants.by_id(self.tenant_id)
        name = str(self.tenant_id) if tenant is None else tenant.server_name
        try:
            stored = await self.parts.store.retry_state(self.tenant_id, self.destination)
        except StorageUnavailable:
            raise
        except Exception:  # noqa: BLE001 - the queue starts afresh, as it did before
            logs.log_exception("federation.send.internal_error", tenant=name,
                               peer=self.destination)
            stored = RetryState()
        self.resumed = True
        if resets != self._resets or stored == RetryState():
            return  # nothing to resume, or the peer was heard from meanwhile
        self.retry = stored
        wait = wait_left(stored, self.parts.wall_ms())
        self.retry_at = trio.current_time() + wait
        logs.log("federation.send.backoff_resumed", tenant=name, peer=self.destination,
                 failures=stored.failures, retry_in_s=round(wait, 1))

    async def _tenant_gone(self, flight: list[_Flight]) -> None:
        """Our tenant is not in the directory (removed, or not loaded yet): wait."""
        await self._land(flight)
        await self._recorded()
        await self.parts.tenants.refresh()
        await self._sleep()

    async def _send_next(self, nursery: trio.Nursery, tenant: Tenant,
                         flight: list[_Flight]) -> bool:
        """Send the next batch if the window has room for it; whether one went.

        Room: nothing in flight, or one batch of a queue that is behind. The
        read starts past the batch in flight, or past the one being recorded.
        """
        if len(flight) >= WINDOW or (flight and not flight[-1].behind):
            return False
        upto = flight[-1].batch[-1].id if flight else self._recording_upto
        queued = await self.parts.store.batch(self.tenant_id, self.destination, BATCH_EVENTS,
                                              upto)
        batch = queued[:take_batch([q.size for q in queued])]
        if not batch:
            return False
        behind = len(queued) == BATCH_EVENTS or len(batch) < len(queued)
        # the second in flight names the last event of the first: the
        # peer takes it only after that one (core.delivery, ``after``)
        last = flight[-1].batch[-1] if flight else None
        after = None if last is None else (last.room_id, last.event_id)
        flight.append(self._launch(nursery, tenant, batch, behind, after))
        return True

    async def _idle(self, tenant: Tenant) -> None:
        """Nothing in flight, nothing to send: wait for the last record (then look again
        from the oldest row), or for a kick."""
        if self._recording is not None:
            await self._record_or_back_off(tenant)
            return
        self.retry_at = None
        await self._sleep()

    async def _take_answer(self, nursery: trio.Nursery, tenant: Tenant,
                           flight: list[_Flight]) -> None:
        """The oldest batch's answer: record what it settled, or back off.

        At a steady pace a batch waits for its record, which lets the next
        one grow; a batch that left something queued makes the next read
        start over from the oldest row once nothing is in flight.
        """
        first = flight.pop(0)
        await first.done.wait()
        try:
            settled = first.answer()
            if not settled.settles_anything:
                # held back for the batch before it (which the peer did not have
                # when this one came): all go again from the oldest row, now
                await self._land(flight)
                await self._record_or_back_off(tenant)
                return
            # the previous batch's record, before this one's: when it failed, its
            # rows, and these, go again after the backoff
            if await self._record_or_back_off(tenant, landing=flight):
                return
            self._start_record(nursery, tenant, first.batch, settled)
            if not first.behind or first.left_queued():
                # Not behind: waiting for the record lets the next batch grow (a
                # /send per few events costs both sides more than the wait).
                # Some stay queued: read from the oldest again.
                await self._land(flight)
                await self._record_or_back_off(tenant)
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

    async def _record_or_back_off(self, tenant: Tenant,
                                  landing: list[_Flight] | None = None) -> bool:
        """Wait for the background record; when it failed, land ``landing`` and back
        off. Whether it failed."""
        failed = await self._recorded()
        if failed is None:
            return False
        if landing is not None:
            await self._land(landing)
        await self._failed(tenant, _internal_error(failed))
        return True

    def _launch(self, nursery: trio.Nursery, tenant: Tenant, batch: list[Queued],
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

    def _start_record(self, nursery: trio.Nursery, tenant: Tenant, batch: list[Queued],
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

    async def _record(self, tenant: Tenant, batch: list[Queued], settled: Settled,
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

    async def _attempt(self, tenant: Tenant, batch: list[Queued],
                       after: tuple[str, str] | None = None) -> Settled:
        """One ``/send`` of the batch; raises FederationError when it settles nothing,
        unless it named the batch before it (``after``) and the peer held every event
        back for that one (core.delivery.deferred_for_order): then it goes again."""
        # Our own policy holds the queue (nothing is dropped) while it
        # refuses this peer: tenant-wide off, closed, denied, not allowed.
        decide_peer(tenant.policy, self.destination)
        resp = await self.parts.transport.send(tenant, self.destination, send_body(
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

    async def _delivered(self, tenant: Tenant, batch: list[Queued], settled: Settled) -> None:
        dest = self.destination
        tenant_name = tenant.server_name
        metrics = self.parts.metrics
        labels = {"tenant": tenant_name, "peer": dest}
        now = self.parts.wall_ms()
        outcome = await self.parts.store.record_delivery(tenant, dest, batch, settled, now)
        for code in outcome.refused:
            metrics.refused_by_peer.inc(**labels, reason=code)
        metrics.latency.observe_many([max(0, now - created_at) / 1000
                                      for created_at in outcome.delivered], **labels)
        ok, refused = len(outcome.delivered), len(outcome.refused)
        metrics.sent.inc(ok, **labels)
        self.retry = RetryState()  # the record cleared the stored one (peer_ok_txn)
        self.retry_at = None
        self.last_error = None
        self.sent += ok
        logs.log("federation.send.success", tenant=tenant_name, peer=dest, reason="delivered",
                 events=ok, refused=refused)
        if refused:
            logs.log("federation.send.refused", level="warning", tenant=tenant_name, peer=dest,
                     events=refused)

    async def _failed(self, tenant: Tenant, exc: FederationError) -> None:
        """Back off: one more failure, stored with when to try again."""
        now = self.parts.wall_ms()
        self.retry, delay = after_failure(self.retry, now, self.parts.rand(),
                                          at_least=self.peer_retry_after or 0.0)
        self.peer_retry_after = None
        self.retry_at = trio.current_time() + delay
        self.last_error = f"{exc.code}: {exc.message}"
        self.parts.metrics.send_failures.inc(tenant=tenant.server_name, peer=self.destination,
                                             reason=exc.code)
        await self.parts.store.record_failure(tenant.tenant_id, self.destination, now,
                                              self.last_error, self.retry)
        self.parts.on_failure(tenant.tenant_id, self.destination)
        logs.log("federation.send.failed", level="warning", tenant=tenant.server_name,
                 peer=self.destination, reason=exc.code, message=exc.message,
                 failures=self.failures, retry_in_s=round(delay, 1))


def _internal_error(exc: Exception) -> FederationError:
    return FederationError(f"internal error while sending ({type(exc).__name__}); the server "
                           "log has the details", code="SW_INTERNAL", status=500)


class Sender:
    """Owns one PeerQueue task per destination with queued events."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.queues: dict[tuple[int, str], PeerQueue] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for tenant_id, destination in await self.parts.store.destinations():
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
            q = PeerQueue(self.parts, tenant_id, destination)
            self.queues[key] = q
            if self._nursery is not None:
                self._nursery.start_soon(q.run, name=f"peer-queue {destination}")
        return q

    def kick(self, tenant_id: int, destination: str) -> None:
        self.queue(tenant_id, destination).poke()

    def policy_changed(self, tenant_id: int) -> None:
        """A tenant's policy changed: queues held by it try again now."""
        for (tid, _), q in list(self.queues.items()):
            if tid == tenant_id and q.backing_off:
                q.poke(reset=True)

    def flag_on(self, tenant_id: int) -> None:
        """A room's federate flag went on at its host: its held rows may go now."""
        for (tid, _), q in list(self.queues.items()):
            if tid == tenant_id:
                q.poke()

    def heard_from(self, tenant_id: int, destination: str) -> None:
        """The peer answered or contacted us: its queue starts its backoff over, now."""
        q = self.queues.get((tenant_id, destination))
        if q is not None and q.backing_off:
            q.poke(reset=True)
