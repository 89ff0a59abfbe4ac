"""One peer's queue under a fake clock: the exact retry times (DESIGN §6, issue 19).

Test rules of this module:

- Every wait is on Trio's ``autojump_clock``: virtual time jumps to the next
  deadline as soon as every task is blocked, so a ten-minute backoff takes no
  real time and each attempt's time is known exactly (to float rounding).
- The queue gets fakes for its parts (federation.sender.Parts): a transport
  that answers from a script and notes the virtual time of each attempt,
  and an in-memory store. Not SQLite: its threads would let the clock jump
  while they work.
- The jitter comes from ``random.Random(SEED)``; the expected delays are
  :func:`swfed.core.backoff.retry_delay` of the same draws, and the first
  ones are also written out (a known answer, so other implementations can
  compare).
- Each test runs under ``trio.fail_after`` (virtual seconds): a bug fails it,
  it never hangs.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from swfed.core.backoff import RetryState, retry_delay
from swfed.core.canonical import encode_canonical_json
from swfed.core.delivery import Settled
from swfed.core.errors import PeerUnreachable
from swfed.core.policy import Policy
from swfed.federation.client import FedResponse
from swfed.federation.sender import Parts, PeerQueue, Sender
from swfed.metrics import Metrics
from swfed.storage.delivery import Delivery
from swfed.storage.peers import Queued
from swfed.storage.tenants import Tenant

SEED = 19
#: The wall clock at virtual time 0 (ms since the epoch).
EPOCH_MS = 1_750_000_000_000
TENANT = Tenant(1, "a.test", True, True, Policy(default_mode="open"))
PEER = "b.test"
ROOM = "!room:a.test"
#: No test runs longer than this, in virtual seconds.
DEADLINE = 3600


def wall_ms() -> int:
    return EPOCH_MS + round(trio.current_time() * 1000)


def delays(seed: int, failures: range) -> list[float]:
    """The waits after these failure counts, drawing the jitter as the queue does."""
    rand = random.Random(seed).random
    return [retry_delay(n, rand()) for n in failures]


def times(start: float, waits: list[float]) -> list[float]:
    out = [start]
    for wait in waits:
        out.append(out[-1] + wait)
    return out


# -- the fakes -------------------------------------------------------------------

Answer = FedResponse | Exception | Callable[[dict[str, Any]], FedResponse]


def stored(body: dict[str, Any]) -> FedResponse:
    """The peer stored every event of the /send."""
    return FedResponse(200, {"results": {e["event_id"]: {} for e in body["events"]}}, "fake")


DOWN = PeerUnreachable("b.test is down (fake)")


@attrs.define
class FakeTransport:
    """Answers each /send with the next of ``script`` (then: stored), noting when."""

    script: list[Answer] = attrs.Factory(list)
    #: (virtual time, the /send body) of each attempt.
    attempts: list[tuple[float, dict[str, Any]]] = attrs.Factory(list)
    #: Set when an attempt comes; ``hold`` set keeps the answer until it is cleared.
    hold: trio.Event | None = None

    async def send(self, tenant: Tenant, destination: str, body: bytes) -> FedResponse:
        assert (tenant, destination) == (TENANT, PEER)
        parsed = json.loads(body)
        self.attempts.append((trio.current_time(), parsed))
        if self.hold is not None:
            await self.hold.wait()
        answer = self.script.pop(0) if self.script else stored
        if isinstance(answer, Exception):
            raise answer
        return answer(parsed) if callable(answer) else answer

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.attempts]

    def events(self, n: int) -> list[str]:
        return [e["event_id"] for e in self.attempts[n][1]["events"]]


@attrs.define
class MemoryStore:
    """The sender's QueueStore in memory: rows, the retry state, what was recorded."""

    rows: list[Queued] = attrs.Factory(list)
    retry: RetryState = RetryState()
    delivered: list[str] = attrs.Factory(list)
    refused: dict[str, str] = attrs.Factory(dict)
    #: (now_ms, error, retry state) of each failure recorded.
    failures: list[tuple[int, str, RetryState]] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)
    next_id: int = 1

    def queue(self, *event_ids: str) -> None:
        for event_id in event_ids:
            raw = encode_canonical_json({"event_id": event_id, "room_id": ROOM,
                                         "type": "message", "content": {"body": event_id}})
            self.rows.append(Queued(self.next_id, event_id, ROOM, raw, wall_ms()))
            self.next_id += 1

    async def wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.changed.wait()
            self.changed = trio.Event()

    async def destinations(self) -> list[tuple[int, str]]:
        await trio.lowlevel.checkpoint()
        return [(TENANT.tenant_id, PEER)] if self.rows else []

    async def batch(self, tenant_id: int, destination: str, limit: int,
                    after: int) -> list[Queued]:
        await trio.lowlevel.checkpoint()
        return [q for q in self.rows if q.id > after][:limit]

    async def record_delivery(self, tenant: Tenant, destination: str, batch: list[Queued],
                              settled: Settled, now_ms: int) -> Delivery:
        await trio.lowlevel.checkpoint()
        done = {q.id for q in batch if q.event_id in settled.delivered
                or q.event_id in settled.refused}
        self.delivered += [q.event_id for q in batch if q.event_id in settled.delivered]
        self.refused.update({q.event_id: settled.refused[q.event_id].code for q in batch
                             if q.event_id in settled.refused})
        self.rows = [q for q in self.rows if q.id not in done]
        self.retry = RetryState()  # as record_delivery_txn's peer_ok_txn
        self.changed.set()
        return Delivery([q.created_at for q in batch if q.event_id in settled.delivered],
                        [settled.refused[q.event_id].code for q in batch
                         if q.event_id in settled.refused])

    async def record_failure(self, tenant_id: int, destination: str, now_ms: int, error: str,
                             retry: RetryState) -> None:
        await trio.lowlevel.checkpoint()
        self.retry = retry
        self.failures.append((now_ms, error, retry))
        self.changed.set()

    async def retry_state(self, tenant_id: int, destination: str) -> RetryState:
        await trio.lowlevel.checkpoint()
        return self.retry


class OneTenant:
    def by_id(self, tenant_id: int) -> Tenant | None:
        return TENANT if tenant_id == TENANT.tenant_id else None

    async def refresh(self) -> None:
        await trio.lowlevel.checkpoint()


def parts(transport: FakeTransport, store: MemoryStore, seed: int = SEED) -> Parts:
    return Parts(transport=transport, store=store, tenants=OneTenant(), metrics=Metrics(),
                 wall_ms=wall_ms, rand=random.Random(seed).random)


@asynccontextmanager
async def running(queue: PeerQueue) -> AsyncIterator[None]:
    """The queue's task, kicked as a commit would; cancelled (a kill) on leaving."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        queue.poke()
        yield
        nursery.cancel_scope.cancel()


def empty(store: MemoryStore) -> Callable[[], bool]:
    return lambda: not store.rows


# -- the tests -------------------------------------------------------------------


def test_the_seeded_jitter_is_a_known_answer() -> None:
    """The waits every schedule test below expects, written out: 2, 4, 8, 16 s nominal."""
    assert [round(d, 4) for d in delays(SEED, range(1, 5))] == [
        2.1417, 4.4559, 8.0655, 16.0735]


async def test_failed_attempts_wait_2_4_8_s_with_jitter_then_deliver(
        autojump_clock: trio.testing.MockClock) -> None:
    transport, store = FakeTransport([DOWN, DOWN, DOWN]), MemoryStore()
    store.queue("e1", "e2")
    queue = PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)
    start = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with running(queue):
            await store.wait_until(empty(store))
    waits = delays(SEED, range(1, 4))
    assert transport.times == pytest.approx(times(start, waits), abs=1e-9)
    assert [round(t - start, 4) for t in transport.times] == [0.0, 2.1417, 6.5976, 14.6631]
    # each failure stored with the next attempt's wall-clock time; the answer cleared it
    at = [EPOCH_MS + round(t * 1000) for t in transport.times]
    assert [f[2] for f in store.failures] == [
        RetryState(n, at[n - 1] + int(waits[n - 1] * 1000)) for n in (1, 2, 3)]
    assert store.failures[0][1].startswith("SW_FED_PEER_UNREACHABLE: ")
    assert store.delivered == ["e1", "e2"] and store.retry == RetryState()
    assert (queue.failures, queue.retry_at, queue.last_error) == (0, None, None)


async def test_a_restarted_server_resumes_the_backoff_where_it_was(
        autojump_clock: trio.testing.MockClock) -> None:
    """Killed 3 s into its third wait, the server starts again over the same store: the
    queue waits out the rest of that wait (to the stored millisecond), then goes on with
    the fourth delay (16 s nominal), not 2 s; an answer clears the state."""
    store = MemoryStore()
    store.queue("e1")
    first = FakeTransport([DOWN] * 10)
    with trio.fail_after(DEADLINE):
        async with running(PeerQueue(parts(first, store), TENANT.tenant_id, PEER)):
            await store.wait_until(lambda: len(store.failures) == 3)
            failed_at = trio.current_time()
            await trio.sleep(3)  # then SIGKILL
    waits = delays(SEED, range(1, 4))
    assert first.times == pytest.approx(times(first.times[0], waits[:2]), abs=1e-9)
    retry = store.retry
    assert retry.failures == 3
    assert retry.retry_at_ms == wall_ms() - 3000 + int(waits[2] * 1000)

    # The restarted server's sender, with the jitter's draws of a new process.
    second = FakeTransport([DOWN])
    restarted = trio.current_time()
    sender = Sender(parts(second, store, seed=SEED + 1))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)  # it kicks the queues with rows
            await store.wait_until(empty(store))
            nursery.cancel_scope.cancel()
    resumed_at = restarted + (retry.retry_at_ms - (EPOCH_MS + round(restarted * 1000))) / 1000
    fourth = delays(SEED + 1, range(4, 5))[0]  # the restarted process's first draw
    assert second.times == pytest.approx([resumed_at, resumed_at + fourth], abs=1e-9)
    # the fourth attempt is where the killed server would have gone (within a ms)
    assert second.times[0] == pytest.approx(failed_at + waits[2], abs=1e-3)
    assert round(second.times[1] - second.times[0], 4) == 18.5961
    assert store.failures[-1][2].failures == 4
    assert store.retry == RetryState() and store.delivered == ["e1"]


async def test_a_queue_started_after_its_retry_time_tries_at_once_and_keeps_the_count(
        autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(retry=RetryState(3, wall_ms() - 60_000))  # down for longer than that
    store.queue("e1")
    transport = FakeTransport([DOWN])
    start = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with running(PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)):
            await store.wait_until(empty(store))
    assert transport.times == pytest.approx([start, start + delays(SEED, range(4, 5))[0]],
                                            abs=1e-9)


async def test_contact_from_the_peer_ends_a_resumed_wait_and_starts_the_schedule_over(
        autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(retry=RetryState(9, wall_ms() + 500_000))  # over 8 minutes ahead
    store.queue("e1")
    transport = FakeTransport([DOWN])
    sender = Sender(parts(transport, store))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            await trio.sleep(5)
            assert transport.attempts == []  # waiting out the stored backoff
            contact = trio.current_time()
            sender.heard_from(TENANT.tenant_id, PEER)  # as Federation.heard_from does
            await store.wait_until(empty(store))
            nursery.cancel_scope.cancel()
    # at once, and after its failure the first delay again (2 s nominal), not the tenth
    assert transport.times == pytest.approx([contact, contact + delays(SEED, range(1, 2))[0]],
                                            abs=1e-9)


async def test_a_peer_s_retry_after_is_honoured_when_longer_than_the_schedule(
        autojump_clock: trio.testing.MockClock) -> None:
    slow_down = FedResponse(429, {"error": {"code": "SW_RATE_LIMITED", "message": "slow down"}},
                            "fake", retry_after=30.0)
    brief = FedResponse(503, {"error": {"code": "SW_STORAGE_UNAVAILABLE", "message": "disk"}},
                        "fake", retry_after=1.0)
    transport, store = FakeTransport([slow_down, brief]), MemoryStore()
    store.queue("e1")
    start = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with running(PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)):
            await store.wait_until(empty(store))
    # 30 s (the peer's, over the schedule's 2.14 s), then the schedule's 4.46 s (over 1 s)
    second_wait = delays(SEED, range(1, 3))[1]
    assert transport.times == pytest.approx(times(start, [30.0, second_wait]), abs=1e-9)
    first, second = store.failures
    assert first[1] == "SW_RATE_LIMITED: b.test answered 429 SW_RATE_LIMITED: slow down"
    assert first[2] == RetryState(1, EPOCH_MS + round(start * 1000) + 30_000)
    assert second[1].startswith("SW_STORAGE_UNAVAILABLE: ")


async def test_an_event_refused_for_good_is_dropped_alone_and_nothing_backs_off(
        autojump_clock: trio.testing.MockClock) -> None:
    def refuse_e2(body: dict[str, Any]) -> FedResponse:
        results: dict[str, Any] = {e["event_id"]: {} for e in body["events"]}
        results["e2"] = {"error": {"code": "SW_FED_EVENT_REJECTED", "message": "policy"}}
        return FedResponse(200, {"results": results}, "fake")

    transport, store = FakeTransport([refuse_e2]), MemoryStore()
    store.queue("e1", "e2", "e3")
    queue = PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)
    start = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with running(queue):
            await store.wait_until(empty(store))
    assert transport.times == [start]
    assert store.delivered == ["e1", "e3"] and store.refused == {"e2": "SW_FED_EVENT_REJECTED"}
    assert store.failures == [] and queue.failures == 0
    refused = queue.parts.metrics.refused_by_peer.values
    assert list(refused.values()) == [1]


async def test_a_transient_refusal_keeps_that_event_queued_and_sends_it_again_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    def later_e2(body: dict[str, Any]) -> FedResponse:
        results: dict[str, Any] = {e["event_id"]: {} for e in body["events"]}
        results["e2"] = {"error": {"code": "SW_FED_PEER_UNREACHABLE", "message": "key",
                                   "transient": True}}
        return FedResponse(200, {"results": results}, "fake")

    transport, store = FakeTransport([later_e2, later_e2]), MemoryStore()
    store.queue("e1", "e2", "e3")
    start = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with running(PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)):
            await store.wait_until(empty(store))
    # settled e1 and e3: e2 again at once; alone and transient again, it settles nothing:
    # a failed attempt, the first delay
    assert transport.times == pytest.approx(
        [start, start, start + delays(SEED, range(1, 2))[0]], abs=1e-9)
    assert [transport.events(n) for n in range(3)] == [["e1", "e2", "e3"], ["e2"], ["e2"]]
    assert store.delivered == ["e1", "e3", "e2"] and store.refused == {}


async def test_a_queue_behind_has_two_sends_in_flight_the_second_naming_the_first(
        autojump_clock: trio.testing.MockClock) -> None:
    transport, store = FakeTransport(hold=trio.Event()), MemoryStore()
    store.queue(*(f"e{i:03}" for i in range(150)))
    with trio.fail_after(DEADLINE):
        async with running(PeerQueue(parts(transport, store), TENANT.tenant_id, PEER)):
            await trio.testing.wait_all_tasks_blocked()
            assert len(transport.attempts) == 2  # never more than two
            assert transport.hold is not None
            transport.hold.set()
            await store.wait_until(empty(store))
    first, second = (body for _, body in transport.attempts)
    assert len(first["events"]) == 100 and "after" not in first
    assert len(second["events"]) == 50
    assert second["after"] == {"room_id": ROOM, "event_id": "e099"}
    assert store.delivered == [f"e{i:03}" for i in range(150)]
