"""The sender's retry schedule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swfed.core.backoff import (
    BASE_SECONDS,
    CAP_SECONDS,
    JITTER,
    LONGEST_WAIT_SECONDS,
    RetryState,
    after_failure,
    retry_delay,
    wait_left,
)


def test_nominal_schedule_doubles_to_the_cap() -> None:
    nominal = [retry_delay(n, 0.5) for n in range(1, 13)]
    assert nominal[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert nominal[-1] == CAP_SECONDS
    assert all(a <= b for a, b in zip(nominal, nominal[1:], strict=False))


@given(failures=st.integers(1, 10_000), rand=st.floats(0.0, 1.0, exclude_max=True))
def test_jitter_bounds(failures: int, rand: float) -> None:
    delay = retry_delay(failures, rand)
    nominal = min(CAP_SECONDS, BASE_SECONDS * 2 ** min(failures - 1, 30))
    assert nominal * (1 - JITTER) - 1e-9 <= delay <= min(CAP_SECONDS, nominal * (1 + JITTER))
    assert 0 < delay <= CAP_SECONDS


def test_bad_arguments() -> None:
    for failures, rand in [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)]:
        with pytest.raises(ValueError):
            retry_delay(failures, rand)


def test_each_failure_counts_one_more_and_stores_when_to_go_again() -> None:
    state, delay = after_failure(RetryState(), 10_000, 0.5)
    assert (state, delay) == (RetryState(1, 12_000), 2.0)
    state, delay = after_failure(state, 12_000, 0.5)
    assert (state, delay) == (RetryState(2, 16_000), 4.0)
    # a peer's Retry-After longer than the schedule wins; a shorter one does not
    assert after_failure(state, 16_000, 0.5, at_least=30.0) == (RetryState(3, 46_000), 30.0)
    assert after_failure(state, 16_000, 0.5, at_least=1.0) == (RetryState(3, 24_000), 8.0)
    # the stored time is whole milliseconds, the wait as the schedule gave it
    state, delay = after_failure(RetryState(), 0, 0.123)
    assert state == RetryState(1, 1_698) and delay == pytest.approx(1.6984)


def test_a_restarted_queue_waits_the_rest_of_its_wait_and_no_more() -> None:
    assert wait_left(RetryState(), 5_000) == 0.0
    assert wait_left(RetryState(3, 9_500), 5_000) == 4.5
    assert wait_left(RetryState(3, 9_500), 9_500) == 0.0
    assert wait_left(RetryState(3, 9_500), 60_000) == 0.0  # overdue: go now
    # a retry time from a clock set back (or forward since) is not waited for long
    assert wait_left(RetryState(3, 10**13), 5_000) == LONGEST_WAIT_SECONDS
