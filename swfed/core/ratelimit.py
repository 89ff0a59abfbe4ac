"""Rate limits: a token bucket as a pure function of (state, now), and a keyed table of them.

A :class:`Rate` allows ``per_second`` on average and bursts of up to
``burst``. A :class:`Bucket` is the state of one key (tokens left, when last
updated); :func:`take` returns the next state and how long to wait (0: go).
Times are seconds on any monotonic clock the caller chooses; nothing here
reads a clock, so tests state exact times.

:class:`KeyedLimiter` keeps one bucket per key (a token, a peer, a tenant
and a reason) with bounded memory: a bucket that has refilled completely is
the same as no bucket, so idle keys are dropped, and past ``max_keys`` the
least recently used key goes first (it can only gain from being forgotten,
which is why the cap is set far above the number of honest keys).

Refusals are :class:`RateLimited`: 429 ``SW_RATE_LIMITED`` with
``details.retry_after`` (whole seconds), which the app also sends as the
``Retry-After`` header.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Hashable

import attrs

from swfed.core.errors import SwfedError


@attrs.frozen
class Rate:
    """``per_second`` on average, up to ``burst`` at once (both > 0)."""

    per_second: float
    burst: float

    def __attrs_post_init__(self) -> None:
        if not (self.per_second > 0 and self.burst >= 1):
            raise ValueError(f"a rate needs per_second > 0 and burst >= 1, got {self!r}")


@attrs.frozen
class Bucket:
    tokens: float
    updated: float


def refill(rate: Rate, bucket: Bucket | None, now: float) -> Bucket:
    """The bucket as of ``now`` (a missing bucket is full; time never runs back)."""
    if bucket is None:
        return Bucket(rate.burst, now)
    elapsed = max(0.0, now - bucket.updated)
    return Bucket(min(rate.burst, bucket.tokens + elapsed * rate.per_second),
                  max(now, bucket.updated))


def take(rate: Rate, bucket: Bucket | None, now: float,
         cost: float = 1.0) -> tuple[Bucket, float]:
    """Spend ``cost`` tokens at ``now``: (the new bucket, seconds to wait; 0 = allowed).

    A refused take spends nothing. A cost above ``burst`` is charged as
    ``burst`` (one huge request is never refused forever).
    """
    cost = min(cost, rate.burst)
    current = refill(rate, bucket, now)
    if current.tokens >= cost:
        return Bucket(current.tokens - cost, current.updated), 0.0
    return current, (cost - current.tokens) / rate.per_second


def is_full(rate: Rate, bucket: Bucket, now: float) -> bool:
    return refill(rate, bucket, now).tokens >= rate.burst


#: Least recently used buckets looked at per check for idleness: amortised
#: cleanup that keeps every check O(1).
SWEEP_PER_CHECK = 4


class KeyedLimiter:
    """One bucket per key, at most ``max_keys`` of them (idle and oldest dropped)."""

    def __init__(self, rate: Rate, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Spend for ``key`` at ``now``; seconds to wait (0.0: allowed, and spent)."""
        bucket, wait = take(self.rate, self._buckets.get(key), now, cost)
        self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        self.sweep(now, SWEEP_PER_CHECK)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def sweep(self, now: float, at_most: int | None = None) -> int:
        """Drop idle (full) buckets among the ``at_most`` least recently used; how many."""
        dropped = 0
        oldest = list(itertools.islice(self._buckets.items(), at_most))
        for key, bucket in oldest:
            if is_full(self.rate, bucket, now):
                del self._buckets[key]
                dropped += 1
        return dropped


class RateLimited(SwfedError):
    """429 SW_RATE_LIMITED; ``retry_after`` whole seconds (at least 1)."""

    status = 429
    code = "SW_RATE_LIMITED"

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"{message}: try again in {seconds} s",
                         details={"retry_after": seconds})
        self.retry_after = seconds


def retry_after_seconds(details: dict[str, object]) -> int | None:
    """The Retry-After value an error's details ask for, if any."""
    value = details.get("retry_after")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
