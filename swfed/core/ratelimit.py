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

:class:`Limits` is the set one server process keeps (built from ``[limits]``):
per token, per peer, per peer's events, per address for refused federation
requests and for lookups of unknown tokens, open streams per user (:class:`StreamSlots`), and a
:class:`LogGate` so a flood of refusals makes a few log lines, not one each.

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

    def refund(self, key: Hashable, now: float, cost: float = 1.0) -> None:
        """Give back ``cost`` spent for ``key`` (up to ``burst``): what was charged
        before the outcome was known turned out not to count. A full bucket goes."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        current = refill(self.rate, bucket, now)
        if current.tokens + cost >= self.rate.burst:
            del self._buckets[key]
        else:
            self._buckets[key] = Bucket(current.tokens + cost, current.updated)

    def blocked(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Seconds until ``key`` could spend ``cost`` (0: now); spends nothing."""
        return take(self.rate, self._buckets.get(key), now, cost)[1]

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


def peek(rate: Rate, bucket: Bucket | None, now: float, cost: float = 1.0) -> float:
    """Seconds until ``cost`` could be spent (0: now), spending nothing."""
    return take(rate, bucket, now, cost)[1]


class StreamSlots:
    """Open long-lived connections per key, at most ``cap`` each (no entry at zero)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> bool:
        """Take a slot; False when ``key`` already holds ``cap``."""
        count = self._open.get(key, 0)
        if count >= self.cap:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def held(self, key: Hashable) -> int:
        return self._open.get(key, 0)


class LogGate:
    """At most ``rate`` log lines per key; says how many were held back since the last one.

    Keys are few and fixed in kind (tenant and reason code), still capped.
    """

    def __init__(self, rate: Rate, max_keys: int = 1000) -> None:
        self._limiter = KeyedLimiter(rate, max_keys)
        self._suppressed: OrderedDict[Hashable, int] = OrderedDict()
        self._max_keys = max_keys

    def admit(self, key: Hashable, now: float) -> int | None:
        """None: skip this line. Else log it, noting this many suppressed before it."""
        if self._limiter.check(key, now) > 0:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._suppressed.move_to_end(key)
            while len(self._suppressed) > self._max_keys:
                self._suppressed.popitem(last=False)
            return None
        return self._suppressed.pop(key, 0)


#: Lookups of bearer tokens (or session cookies) this server does not know, per
#: client address: a burst of 100, then 2 a second. A token it has seen is never
#: charged, and one it had not seen yet but finds is refunded, so only failed
#: lookups count: a flood of made-up tokens (538 lookups/s before) meets 429 after
#: 100, while the people behind that address keep working.
UNKNOWN_TOKENS = Rate(per_second=2.0, burst=100.0)

#: A refusal of an unverified origin is stored at most this often per tenant,
#: peer (when known) and reason, after a burst of 20: the admin sees who
#: knocks, a flood adds no rows.
UNKNOWN_ROW_SECONDS = 10.0


class Limits:
    """The limiters one server process keeps (see ``[limits]`` in the config)."""

    def __init__(self, *, client: Rate, federation: Rate, federation_events: Rate,
                 refused: Rate, streams_per_user: int, max_keys: int,
                 unknown_tokens: Rate = UNKNOWN_TOKENS) -> None:
        #: per (tenant, bearer token)
        self.client = KeyedLimiter(client, max_keys)
        #: per (tenant, verified peer)
        self.federation = KeyedLimiter(federation, max_keys)
        #: per (tenant, verified peer), one token per event on /send
        self.federation_events = KeyedLimiter(federation_events, max_keys)
        #: lookups of unknown bearer tokens, per client address (refunded when found)
        self.unknown_tokens = KeyedLimiter(unknown_tokens, max_keys)
        #: federation requests refused before authentication, per client address
        self.refusals = KeyedLimiter(refused, max_keys)
        #: rows stored for refusals of unverified origins, per (tenant, known peer, reason)
        self.refusal_rows = KeyedLimiter(Rate(per_second=1 / UNKNOWN_ROW_SECONDS, burst=20.0),
                                         max_keys)
        #: open event streams per (tenant, user)
        self.streams = StreamSlots(streams_per_user)
        #: log lines of refusals that are counted rather than stored
        self.log = LogGate(Rate(per_second=1.0, burst=10.0))
