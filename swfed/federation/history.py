"""Pulling a room's signed history from its host, each event verified first.

Used by the admin's backfill (older history, newest first) and by gap
repair (what we missed since our synced mark, oldest first). An event
that fails its checks is left out and counted; nothing unverified is
stored but a deleted event's tombstone (no words, its place in the host's
order: core.events.check_tombstone).
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core.errors import FederationError
from swfed.core.events import check_federated_event, check_tombstone
from swfed.core.rooms import unsigned_seq
from swfed.core.signing import signable_or_none
from swfed.storage.tenants import Tenant


@attrs.frozen
class Page:
    """Verified events of one answer, how many were refused, and the host's cursor."""

    events: list[dict[str, Any]]
    refused: list[tuple[dict[str, Any], FederationError]]
    next: int | None = None
    last_seq: int | None = None
    #: Each answered event's ``unsigned.seq`` (None if it has none), in the answer's order.
    seqs: list[int | None] = attrs.Factory(list)


async def fetch(fed: Any, tenant: Tenant, host: str, room_id: str, *,
                before: int | None = None, after: int | None = None,
                limit: int = 100) -> Page:
    """One page of the host's ``/backfill``; raises FederationError (the host's or ours)."""
    from swfed.federation.service import error_of

    path = f"/rooms/{room_id}/backfill?limit={limit}"
    if before is not None:
        path += f"&before={before}"
    if after is not None:
        path += f"&after={after}"
    resp = await fed.get(tenant, host, path)
    if resp.status != 200:
        raise error_of(resp, host)
    raw = resp.body.get("events")
    checked: list[tuple[dict[str, Any], bytes | None]] = []
    refused: list[tuple[dict[str, Any], FederationError]] = []
    seqs: list[int | None] = []
    tombstones: list[dict[str, Any]] = []
    for event in raw if isinstance(raw, list) else []:
        seqs.append(unsigned_seq(event))
        if (check_tombstone(event) is not None and event["room_id"] == room_id
                and unsigned_seq(event) is not None):
            tombstones.append(event)  # a deleted event: on the host's word, no words in it
            continue
        try:
            signable = signable_or_none(event)
            check_federated_event(event, signable=signable)
            if event["room_id"] != room_id:
                raise FederationError("event of another room", code="SW_FED_BAD_EVENT")
            if unsigned_seq(event) is None:
                raise FederationError("history event without its seq",
                                      code="SW_FED_BAD_EVENT")
            checked.append((event, signable))
        except FederationError as exc:
            refused.append((event if isinstance(event, dict) else {}, exc))
    # events we hold already are not checked again (storing them is a no-op)
    errors = await fed.verify_new_events(tenant, checked, via=host)
    verified: list[dict[str, Any]] = list(tombstones)
    for (event, _), error in zip(checked, errors, strict=True):
        if error is None:
            verified.append(event)
        else:
            refused.append((event, error))
    nxt = resp.body.get("next")
    last = resp.body.get("last_seq")
    return Page(verified, refused, nxt if isinstance(nxt, int) else None,
                last if isinstance(last, int) and not isinstance(last, bool) else None, seqs)

