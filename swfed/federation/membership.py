"""Our users' membership of rooms hosted elsewhere changes through the host, synchronously.

Accepting or declining an invite, joining and leaving a room hosted by
another server (or another tenant of this process) go like this:

1. the member event is built and signed here, but not stored;
2. it is sent to the host (``POST …/rooms/{room_id}/membership``), which
   checks it, orders it and answers its ``seq``, for a join with the room's
   state as of that seq (members and newest events, within its backfill
   policy);
3. only then is it stored here, with the host's seq, and the state taken,
   so our copy starts equal to the host's. The host vouches for the room's
   order and its foreign members, never for ours: a user of ours it lists
   as a member without their own action here is ignored and logged
   (``federation.host_lie``). An answer that is malformed in part is taken
   as far as it is well-formed (the rest repair fetches later), never a 5xx.

The host unreachable (or failing): 503 ``SW_FED_PEER_UNREACHABLE``, retryable,
and nothing changed here (an invite stays pending). The host refuses: its
code, and nothing changed here.
"""

from __future__ import annotations

from typing import Any

from swfed import logs
from swfed.core.errors import FederationError
from swfed.core.rooms import PENDING_SEQ, Room, unsigned_seq
from swfed.federation.client import TRANSPORT_CODES
from swfed.storage import room_writes
from swfed.storage.context import Ctx
from swfed.storage.tenants import Tenant

#: How many of its newest events the host's answer carries.
STATE_EVENTS = 50


def unreachable(host: str, why: str) -> FederationError:
    return FederationError(
        f"the room's host {host} could not be reached ({why}); nothing changed here: "
        "try again in a moment", code="SW_FED_PEER_UNREACHABLE", status=503)


async def ask_host(state: Any, tenant: Tenant, room: Room, path: str,
                   body: dict[str, Any]) -> dict[str, Any]:
    """POST to the room's host for one of our members; its 200 answer.

    Raises the host's refusal as its code (``error_of``), or
    SW_FED_PEER_UNREACHABLE (503, retryable) when it can't answer now.
    """
    from swfed.federation.service import error_of

    try:
        resp = await state.federation.post(tenant, room.host,
                                           f"/rooms/{room.room_id}{path}", body)
    except FederationError as exc:
        if exc.code in TRANSPORT_CODES:
            raise unreachable(room.host, exc.message) from None
        raise
    if resp.status >= 500:
        raise unreachable(room.host, f"it answered {resp.status}")
    if resp.status != 200:
        raise error_of(resp, room.host)
    return dict(resp.body)


async def change(state: Any, tenant: Tenant, action: str, member: str, *,
                 room_id: str | None = None, invite_id: str | None = None,
                 display_name: str = "") -> str | None:
    """Accept, decline, join or leave through the host; returns the room id.

    ``room_id`` with ``invite_id``: the invite of that room (invite ids are
    unique per room).

    Returns None when we host the room: the caller takes the local path.
    Raises the local refusals, the host's refusal (its code), or
    SW_FED_PEER_UNREACHABLE (503) when the host can't answer now.
    """

    fed = state.federation
    ctx = Ctx(tenant, state.clock(), fed.signer(tenant))
    built = await state.db.read(room_writes.membership_event_txn, ctx, action, member,
                                room_id=room_id, invite_id=invite_id,
                                display_name=display_name)
    if built is None:
        return None
    room, signed = built
    try:
        answer = await ask_host(state, tenant, room, "/membership", {"event": signed})
    except FederationError as exc:
        logs.log("federation.membership.refused", level="warning", tenant=tenant.server_name,
                 peer=room.host, room_id=room.room_id, member=member, action=action,
                 reason=exc.code)
        raise
    seq = answer.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < PENDING_SEQ:
        raise FederationError(f"{room.host} answered the membership request without its seq",
                              code="SW_FED_BAD_RESPONSE", status=502)
    members = answer.get("members")
    events = await _verified(fed, tenant, room, answer.get("events"), seq)
    ctx = Ctx(tenant, state.clock(), fed.signer(tenant))
    lies = await state.db.write(room_writes.apply_membership_txn, ctx, signed, seq,
                                members if isinstance(members, list) else [], events)
    if lies:
        logs.log("federation.host_lie", level="warning", tenant=tenant.server_name,
                 peer=room.host, room_id=room.room_id, member=member, action=action,
                 listed=lies[:20], count=len(lies),
                 message="the host listed users of ours as members without their own "
                         "action here; ignored")
    logs.log("federation.membership", tenant=tenant.server_name, peer=room.host,
             room_id=room.room_id, member=member, action=action, seq=seq)
    return room.room_id


async def _verified(fed: Any, tenant: Tenant, room: Room, raw: Any,
                    seq: int) -> list[dict[str, Any]]:
    """The state events of the host's answer that verify (the rest repair fetches later),
    and deleted events' tombstones (core.events.check_tombstone: no words, on the
    host's word)."""
    from swfed.core.events import check_federated_event, check_tombstone

    checked = []
    tombstones = []
    for event in raw if isinstance(raw, list) else []:
        if check_tombstone(event) is not None:
            event_seq = unsigned_seq(event)
            if event["room_id"] == room.room_id and event_seq is not None and event_seq <= seq:
                tombstones.append(event)
            continue
        try:
            check_federated_event(event)
        except FederationError:
            continue
        event_seq = unsigned_seq(event)
        if event["room_id"] == room.room_id and event_seq is not None and event_seq <= seq:
            checked.append((event, None))
    errors = await fed.verify_events(tenant, checked, via=room.host)
    return tombstones + [event for (event, _), error in zip(checked, errors, strict=True)
                         if error is None]
