"""The token bucket and the keyed limiter, at exact times."""

from __future__ import annotations

import pytest

from swfed.core.ratelimit import (
    Bucket,
    KeyedLimiter,
    LogGate,
    Rate,
    RateLimited,
    StreamSlots,
    refill,
    retry_after_seconds,
    take,
)

RATE = Rate(per_second=2.0, burst=4.0)


def test_a_new_key_has_a_full_burst_then_waits_exactly() -> None:
    bucket = None
    for _ in range(4):
        bucket, wait = take(RATE, bucket, 10.0)
        assert wait == 0.0
    assert bucket == Bucket(0.0, 10.0)
    bucket, wait = take(RATE, bucket, 10.0)
    assert wait == 0.5
    assert bucket == Bucket(0.0, 10.0)  # a refusal spends nothing
    bucket, wait = take(RATE, bucket, 10.25)
    assert wait == 0.25
    bucket, wait = take(RATE, bucket, 10.5)
    assert wait == 0.0
    assert bucket == Bucket(0.0, 10.5)


def test_refill_caps_at_burst_and_time_never_runs_back() -> None:
    assert refill(RATE, Bucket(0.0, 0.0), 100.0) == Bucket(4.0, 100.0)
    assert refill(RATE, Bucket(1.0, 5.0), 4.0) == Bucket(1.0, 5.0)
    assert refill(RATE, Bucket(1.0, 5.0), 5.5) == Bucket(2.0, 5.5)


def test_cost_counts_and_a_cost_over_burst_is_charged_as_burst() -> None:
    bucket, wait = take(RATE, None, 0.0, cost=3)
    assert (bucket, wait) == (Bucket(1.0, 0.0), 0.0)
    bucket, wait = take(RATE, bucket, 0.0, cost=3)
    assert wait == 1.0
    bucket, wait = take(RATE, None, 0.0, cost=1000)
    assert (bucket, wait) == (Bucket(0.0, 0.0), 0.0)


def test_steady_rate_is_allowed_for_ever() -> None:
    bucket = None
    for i in range(10_000):
        bucket, wait = take(RATE, bucket, i * 0.5)
        assert wait == 0.0


def test_keys_are_independent() -> None:
    lim = KeyedLimiter(Rate(1.0, 1.0))
    assert lim.check("a", 0.0) == 0.0
    assert lim.check("a", 0.0) == 1.0
    assert lim.check("b", 0.0) == 0.0
    assert lim.check("a", 1.0) == 0.0


def test_memory_is_bounded_and_idle_keys_go_first() -> None:
    lim = KeyedLimiter(Rate(1.0, 2.0), max_keys=100)
    for i in range(10_000):
        lim.check(("flood", i), 0.0)
        assert len(lim) <= 100
    # Keys that have refilled are forgotten as checks go by (the sweep).
    for i in range(100):
        lim.check(("later", i % 3), 1000.0 + i)
    assert len(lim) <= 10


def test_forgetting_a_key_only_ever_helps_it() -> None:
    lim = KeyedLimiter(Rate(1.0, 1.0), max_keys=1)
    assert lim.check("a", 0.0) == 0.0
    assert lim.check("b", 0.0) == 0.0  # evicts a
    assert lim.check("a", 0.0) == 0.0


def test_bad_rates_are_refused() -> None:
    for per_second, burst in ((0, 1), (1, 0.5), (-1, 5)):
        with pytest.raises(ValueError):
            Rate(per_second, burst)
    with pytest.raises(ValueError):
        KeyedLimiter(RATE, max_keys=0)


def test_rate_limited_error_carries_whole_seconds() -> None:
    exc = RateLimited("too many requests for this token", 0.01)
    assert (exc.status, exc.code, exc.retry_after) == (429, "SW_RATE_LIMITED", 1)
    assert retry_after_seconds(exc.details) == 1
    assert "try again in 1 s" in exc.message
    assert RateLimited("x", 2.2).retry_after == 3
    assert retry_after_seconds({}) is None


def test_stream_slots_cap_each_key_and_forget_empty_ones() -> None:
    slots = StreamSlots(2)
    assert slots.acquire("u") and slots.acquire("u")
    assert not slots.acquire("u")
    assert slots.acquire("v")
    slots.release("u")
    assert slots.held("u") == 1 and slots.acquire("u")
    for _ in range(5):
        slots.release("v")
    assert slots.held("v") == 0 and slots.acquire("v")


def test_log_gate_admits_a_burst_then_one_a_second_with_the_count_left_out() -> None:
    gate = LogGate(Rate(per_second=1.0, burst=2.0))
    assert gate.admit("k", 0.0) == 0
    assert gate.admit("k", 0.0) == 0
    assert [gate.admit("k", 0.0) for _ in range(5)] == [None] * 5
    assert gate.admit("k", 1.0) == 5
    assert gate.admit("other", 1.0) == 0


def test_blocked_peeks_without_spending() -> None:
    lim = KeyedLimiter(Rate(1.0, 1.0))
    assert lim.blocked("a", 0.0) == 0.0
    assert lim.blocked("a", 0.0) == 0.0
    assert lim.check("a", 0.0) == 0.0
    assert lim.blocked("a", 0.25) == 0.75


def test_refund_gives_back_what_did_not_count() -> None:
    lim = KeyedLimiter(Rate(per_second=1.0, burst=2.0))
    assert lim.check("a", 0.0) == 0.0 and lim.check("a", 0.0) == 0.0
    assert lim.blocked("a", 0.0) == 1.0
    lim.refund("a", 0.0)
    assert lim.blocked("a", 0.0) == 0.0 and len(lim) == 1
    lim.refund("a", 0.0)  # full again: the same as no bucket
    assert len(lim) == 0
    lim.refund("never", 0.0)  # nothing was charged: nothing to give back
    assert len(lim) == 0
    assert lim.check("b", 0.0) == 0.0
    lim.refund("b", 0.5, cost=10)  # never past the burst
    assert len(lim) == 0
