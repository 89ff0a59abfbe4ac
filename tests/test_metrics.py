"""A histogram observed a batch at a time counts as if each value came alone."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from swfed.metrics import Histogram

BOUNDS = (0.005, 0.05, 0.5, 1.0, 5.0)


@given(st.lists(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False),
                         max_size=20), max_size=5))
def test_observe_many_counts_each_value_in_every_bucket_at_or_above_it(
        batches: list[list[float]]) -> None:
    h = Histogram("x", "help", BOUNDS)
    for batch in batches:
        h.observe_many(batch, peer="b.test")
    values = [v for batch in batches for v in batch]
    if not values:
        assert h.series == {}  # nothing observed: no series
        return
    counts, total = h.series[(("peer", "b.test"),)]
    assert counts == [sum(v <= bound for v in values) for bound in (*BOUNDS, math.inf)]
    assert math.isclose(total[0], sum(values), abs_tol=1e-9)
