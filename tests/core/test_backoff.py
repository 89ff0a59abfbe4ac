"""The sender's retry schedule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swfed.core.backoff import BASE_SECONDS, CAP_SECONDS, JITTER, retry_delay


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
