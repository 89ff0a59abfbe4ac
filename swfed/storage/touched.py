"""What a committed write touched, so the commit can wake exactly that.

Every transaction runs on a connection that carries a :class:`Touched`. The
few storage functions that make something for someone else to act on say so
as they write it:

- ``peers.enqueue_txn`` queues events for peers -> :meth:`Touched.outbox`;
- ``stream.take_positions_txn`` moves a tenant's stream -> :meth:`Touched.stream`;
- the room protocol sees a gap in a copy of a room hosted elsewhere ->
  :meth:`Touched.repair`;
- a stored event names a peer's file not here yet (``media.reference_txn``)
  -> :meth:`Touched.fetch_media`.

The writer keeps what each write touched only if that write's savepoint was
released, and after the COMMIT hands the union of a group commit's writes to
the hooks registered with ``Database.on_commit`` (on the Trio thread). No
caller forwards wake-ups by hand, and a commit wakes the sender only for the
peers that got rows and the streams only of the tenants whose stream moved.
"""

from __future__ import annotations

import attrs


@attrs.define
class Touched:
    #: (tenant_id, destination) pairs that got new outbox rows.
    peers: set[tuple[int, str]] = attrs.Factory(set)
    #: tenant ids whose stream position moved.
    streams: set[int] = attrs.Factory(set)
    #: (tenant_id, room_id) copies of rooms hosted elsewhere with a gap seen.
    repairs: set[tuple[int, str]] = attrs.Factory(set)
    #: (tenant_id, media_id) peers' files to fetch from their origin.
    media: set[tuple[int, str]] = attrs.Factory(set)

    def outbox(self, tenant_id: int, destinations: list[str]) -> None:
        self.peers.update((tenant_id, d) for d in destinations)

    def stream(self, tenant_id: int) -> None:
        self.streams.add(tenant_id)

    def repair(self, tenant_id: int, room_id: str) -> None:
        self.repairs.add((tenant_id, room_id))

    def fetch_media(self, tenant_id: int, media_id: str) -> None:
        self.media.add((tenant_id, media_id))

    def update(self, other: Touched) -> None:
        self.peers |= other.peers
        self.streams |= other.streams
        self.repairs |= other.repairs
        self.media |= other.media

    def __bool__(self) -> bool:
        return bool(self.peers or self.streams or self.repairs or self.media)
