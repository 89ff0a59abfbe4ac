"""The federation sender's retry schedule (DESIGN §6): pure, no clock, no RNG.

After the n-th consecutive failure the sender waits
``min(CAP, BASE * 2**(n-1))`` seconds, times a jitter factor in
[1 - JITTER, 1 + JITTER), never more than CAP:

=========  =======  ==========================
failures   nominal  cumulative (nominal)
=========  =======  ==========================
1          2 s      2 s
2          4 s      6 s
3          8 s      14 s
5          32 s     62 s
7          128 s    ~4 min
9          512 s    ~17 min
10+        600 s    then every ~10 minutes
=========  =======  ==========================

A homelab peer that reboots is caught up within a minute or two; one that is
gone for a day is tried about every ten minutes. Any sign of life from the
peer (it contacts us) or an admin's retry resets the schedule.

The state is a :class:`RetryState` -- consecutive failures and when the next
attempt is due, in wall-clock milliseconds -- which the sender stores with
each failure (``peers.failures``, ``peers.next_retry_at``) and reads back at
start: :func:`after_failure` is the next state, :func:`wait_left` how long a
restarted queue still waits. Both are functions of (state, now, rand) only.
"""

from __future__ import annotations

import attrs

BASE_SECONDS = 2.0
CAP_SECONDS = 600.0
JITTER = 0.2
#: The longest wait ever stored: the schedule's cap, or a peer's ``Retry-After``
#: (taken up to an hour). A stored retry time further away than this (the wall
#: clock was set back) is not waited for longer.
LONGEST_WAIT_SECONDS = 3600.0


@attrs.frozen
class RetryState:
    """A queue's backoff: ``failures`` in a row, the next attempt due at ``retry_at_ms``
    (wall clock, ms; None: not backing off)."""

    failures: int = 0
    retry_at_ms: int | None = None


def after_failure(state: RetryState, now_ms: int, rand: float, *,
                  at_least: float = 0.0) -> tuple[RetryState, float]:
    """The state after one more failure at ``now_ms``, and the seconds to wait.

    The wait is :func:`retry_delay` of the new count, or ``at_least`` (a peer's
    ``Retry-After``) when that is longer. Raises ValueError for rand outside [0, 1).
    """
    failures = state.failures + 1
    delay = max(retry_delay(failures, rand), at_least)
    return RetryState(failures, now_ms + int(delay * 1000)), delay


def wait_left(state: RetryState, now_ms: int) -> float:
    """Seconds still to wait at ``now_ms`` before the next attempt (0: go now).

    What a restarted queue waits: the rest of the wait it had, never more
    than :data:`LONGEST_WAIT_SECONDS`.
    """
    if state.retry_at_ms is None:
        return 0.0
    return min(LONGEST_WAIT_SECONDS, max(0.0, (state.retry_at_ms - now_ms) / 1000))


def retry_delay(failures: int, rand: float) -> float:
    """Seconds to wait after ``failures`` (>= 1) consecutive failures.

    ``rand`` in [0, 1) is injected so the schedule is testable. Raises
    ValueError for failures < 1 or rand outside [0, 1).
    """
    if failures < 1:
        raise ValueError("failures must be >= 1")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    nominal = min(CAP_SECONDS, BASE_SECONDS * 2.0 ** min(failures - 1, 30))
    return min(CAP_SECONDS, nominal * (1 - JITTER + 2 * JITTER * rand))
