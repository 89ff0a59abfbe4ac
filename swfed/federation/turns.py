"""One peer's ``/send`` requests are stored in the order they came.

A sender that is behind has two ``/send`` in flight (federation.sender), so
that we check one batch while we store the one before it. Checking runs
side by side; storing waits for its turn: each request stores after the one
of the same peer (and tenant) that came before it. Then the host's events
reach the writer in the host's order and take the common path (the synced
mark moves over each as it is stored) instead of waiting, out of order, for
the ones before them.

A turn ends however its request ends (stored, refused, cancelled), so a
request only ever waits for earlier ones, which never wait for it: no
deadlock, and nothing is kept once a peer's requests are done.
"""

from __future__ import annotations

from collections.abc import Hashable

import trio


class Turn:
    def __init__(self, turns: Turns, key: Hashable, before: trio.Event | None) -> None:
        self._turns, self._key, self._before = turns, key, before
        self.over = trio.Event()

    async def wait(self) -> None:
        """Until the request before this one (same key) has ended."""
        if self._before is not None:
            await self._before.wait()

    def end(self) -> None:
        self.over.set()
        self._turns.ended(self._key, self)


class Turns:
    def __init__(self) -> None:
        self._last: dict[Hashable, Turn] = {}

    def take(self, key: Hashable) -> Turn:
        """The next turn for ``key``: after every turn taken before it has ended."""
        last = self._last.get(key)
        turn = Turn(self, key, None if last is None else last.over)
        self._last[key] = turn
        return turn

    def ended(self, key: Hashable, turn: Turn) -> None:
        if self._last.get(key) is turn:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


#: The process's turns, by (tenant id, origin).
TURNS = Turns()
