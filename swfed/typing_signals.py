"""Typing: a short-lived signal, never stored (issue 20).

A user of ours says they are typing in a room (``POST /v1/rooms/{room_id}/typing``);
the signal goes to the streams of the room's other local members (``event:
typing``, no ``id:``: nothing to resume) and, best effort, to the room's other
servers over ``POST /_scaiwave/federation/v1/rooms/{room_id}/typing`` (to the
host, which relays it to its member servers). A signal lasts :data:`TYPING_MS`
unless renewed; ``typing: false`` ends it. Rate limited per user and per peer;
refused for anyone not joined.

The hub is per process (like the replay guard): recent signals of each tenant,
each with the local users whose streams get it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from swfed.core.ratelimit import KeyedLimiter, Rate

#: How long a typing signal lasts unless renewed (ms).
TYPING_MS = 6_000
#: A user's signals: a burst, then one every two seconds.
USER_RATE = Rate(per_second=0.5, burst=5)
#: A peer's signals: all its users' together.
PEER_RATE = Rate(per_second=5, burst=20)
#: Signals kept per tenant for streams to catch up on (a stream reads them at once).
KEPT = 256


@attrs.frozen
class Signal:
    counter: int
    room_id: str
    user: str
    typing: bool
    until: int
    to: frozenset[str]  # local ids whose streams get it

    def json(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "user": self.user, "typing": self.typing,
                "until": self.until}


@attrs.define
class TypingHub:
    signals: dict[int, deque[Signal]] = attrs.Factory(dict)
    counter: int = 0
    users: KeyedLimiter = attrs.Factory(lambda: KeyedLimiter(USER_RATE))
    peers: KeyedLimiter = attrs.Factory(lambda: KeyedLimiter(PEER_RATE))

    def add(self, tenant_id: int, room_id: str, user: str, typing: bool, now_ms: int,
            to: frozenset[str]) -> None:
        self.counter += 1
        kept = self.signals.setdefault(tenant_id, deque(maxlen=KEPT))
        kept.append(Signal(self.counter, room_id, user, typing,
                           now_ms + TYPING_MS if typing else now_ms, to))

    def head(self) -> int:
        return self.counter

    def since(self, tenant_id: int, local_id: str,
              after: int) -> tuple[list[dict[str, Any]], int]:
        """The signals for ``local_id``'s streams after ``after``, and the new mark."""
        out = [s.json() for s in self.signals.get(tenant_id, ())
               if s.counter > after and local_id in s.to]
        return out, self.counter


TYPING = TypingHub()


def typing_path(room_id: str) -> str:
    return f"/rooms/{room_id}/typing"


def local_audience(joined: list[str], me: str, user: str) -> frozenset[str]:
    """The local ids of the room's joined members of ours, but the one typing."""
    return frozenset(f[1:].partition(":")[0] for f in joined
                     if f != user and f[1:].partition(":")[2] == me)


def targets(host: str, me: str, joined: list[str], user: str, origin: str) -> set[str]:
    """Where a signal goes on from here: from the host, to every server with a joined
    member but ours and its origin; from a member server, only to the host (its own
    users' signals)."""
    if host != me:
        return {host} if origin == me else set()
    servers = {f[1:].partition(":")[2] for f in joined}
    return servers - {me, origin}


async def spread(st: Any, tenant: Any, room_id: str, user: str, typing: bool,
                 to: set[str]) -> None:
    """Best effort: each server within a few seconds, or not at all."""
    import trio

    async def one(server: str) -> None:
        try:
            await st.federation.post(tenant, server, typing_path(room_id),
                                     {"user": user, "typing": typing})
        except Exception:  # noqa: BLE001 - best effort: a signal lost is no harm
            return

    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            for server in sorted(to):
                nursery.start_soon(one, server)
