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
"""

from __future__ import annotations

BASE_SECONDS = 2.0
CAP_SECONDS = 600.0
JITTER = 0.2


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
