"""Refusing a signed request seen before (inside the ±60 s clock window).

A request signature stays valid for the clock window, so a captured request
could be sent again. ``/send`` is safe to repeat (event ids make it
idempotent); the other POSTs are not all so (a call token, an invite), so
each of their signatures is accepted once. The memory is bounded: entries
older than the window are dropped, and at most :data:`MAX_ENTRIES` are kept
(the oldest go first — a flood cannot grow it).
"""

from __future__ import annotations

from collections import OrderedDict

from swfed.core.errors import FederationError

#: How long a signature is remembered (s): the clock window both ways, and margin.
WINDOW_SECONDS = 150.0
MAX_ENTRIES = 100_000


class ReplayGuard:
    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def check(self, origin: str, signature: str, now: float) -> None:
        """Raises SW_FED_REPLAY when this origin's signature was already accepted."""
        while self._seen and (len(self._seen) >= MAX_ENTRIES
                              or next(iter(self._seen.values())) < now - WINDOW_SECONDS):
            self._seen.popitem(last=False)
        key = (origin, signature)
        if key in self._seen:
            raise FederationError("this signed request was already received: sign each "
                                  "request anew", code="SW_FED_REPLAY", status=409)
        self._seen[key] = now


#: One per process: a request names its destination tenant in what is signed.
GUARD = ReplayGuard()
