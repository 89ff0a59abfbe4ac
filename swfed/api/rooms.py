"""``/v1/rooms``: create, read, members, invites, join, leave, messages (edit, delete),
reactions (on, off)."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint

from swfed.api.common import (
    act,
    current_user,
    int_arg,
    json_body,
    page,
    page_limit,
    rate_limited,
    read,
    recorded_refusal,
    state,
    tenant,
)
from swfed.api.me import room_json
from swfed.core import events
from swfed.core.errors import BadRequest
from swfed.core.rooms import Room, room_not_found
from swfed.federation import membership
from swfed.storage import members as members_db
from swfed.storage import reads as reads_db
from swfed.storage import room_writes
from swfed.storage import rooms as rooms_db

bp = Blueprint("rooms", __name__)


@bp.post("/v1/rooms")
async def create_room() -> tuple[dict[str, Any], int]:
    user = await current_user()
    spec = events.parse_room_spec(await json_body())
    room = await act(room_writes.create_room_txn, spec, user.fqid, user.display_name)
    return room_json(room), 201


@bp.get("/v1/rooms/<room_id>")
async def get_room(room_id: str) -> dict[str, Any]:
    user = await current_user()
    return room_json(await read(rooms_db.joined_room_txn, tenant(), room_id, user.fqid))


@bp.patch("/v1/rooms/<room_id>")
async def update_room(room_id: str) -> dict[str, Any]:
    """``{"federate": bool}``: this server's half of the per-room federation switch.

    A room federates only while the flag is on at the host *and* at each
    member server; the room's creator or a tenant admin sets it.
    """
    user = await current_user()
    body = await json_body()
    unknown = sorted(set(body) - {"federate"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; PATCH /v1/rooms/{{room_id}} takes "
                         "federate", code="SW_UNKNOWN_FIELD")
    if not isinstance(body.get("federate"), bool):
        raise BadRequest("federate: expected true or false", code="SW_BAD_TYPE")
    async with recorded_refusal(tenant(), None, actor=user.fqid, room_id=room_id):
        room = await act(room_writes.set_federate_txn, room_id, user.fqid, user.admin,
                         body["federate"])
    fed = state().federation
    if room.federate and fed is not None:
        if room.host == tenant().server_name:
            fed.sender.flag_on(tenant().tenant_id)  # held rows go now
        else:
            fed.repairer.request(tenant(), room_id)  # what was refused while off
    return room_json(room)


@bp.get("/v1/rooms/<room_id>/members")
async def members(room_id: str) -> dict[str, Any]:
    user = await current_user()
    return {"data": await read(members_db.members_txn, tenant(), room_id, user.fqid)}


@bp.post("/v1/rooms/<room_id>/invites")
async def invite(room_id: str) -> tuple[dict[str, Any], int]:
    user = await current_user()
    invitee = events.parse_fqid_body(await json_body(), tenant().server_name)
    room = await read(rooms_db.joined_room_txn, tenant(), room_id, user.fqid)
    async with recorded_refusal(tenant(), invitee.server_name, actor=user.fqid,
                                room_id=room_id):
        if room.host != tenant().server_name:
            # a member on another server: the host applies its rules and invites
            return await _through_host(room, "/invites", {"inviter": user.fqid,
                                                          "invitee": str(invitee)}), 201
        result = await act(room_writes.invite_txn, room_id, user.fqid, invitee)
    return result, 201


@bp.delete("/v1/rooms/<room_id>/invites/<invite_id>")
async def cancel_invite(room_id: str, invite_id: str) -> dict[str, Any]:
    """Cancel a pending invite: its inviter, the room's creator or a tenant admin."""
    user = await current_user()
    room = await read(rooms_db.joined_room_txn, tenant(), room_id, user.fqid)
    if room.host != tenant().server_name:
        return await _through_host(room, f"/invites/{invite_id}/cancel", {"actor": user.fqid})
    result: dict[str, Any] = await act(room_writes.cancel_invite_txn, room_id, invite_id,
                                       user.fqid, user.admin)
    return result


async def _through_host(room: Room, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Ask the room's host to do something for one of our members; its answer, or its code."""
    return await membership.ask_host(state(), tenant(), room, path, body)


@bp.post("/v1/rooms/<room_id>/join")
async def join(room_id: str) -> dict[str, Any]:
    """Accepts my pending invite; in a room hosted elsewhere, once the host has ordered it."""
    user = await current_user()
    if await membership.change(state(), tenant(), "join", user.fqid, room_id=room_id,
                               display_name=user.display_name) is None:
        await act(room_writes.join_txn, room_id, user.fqid, user.display_name)
    return {"room_id": room_id}


@bp.post("/v1/rooms/<room_id>/leave")
async def leave(room_id: str) -> dict[str, Any]:
    """In a room hosted elsewhere, answers once the host has ordered the leave."""
    user = await current_user()
    if await membership.change(state(), tenant(), "leave", user.fqid,
                               room_id=room_id) is None:
        await act(room_writes.leave_txn, room_id, user.fqid)
    return {"room_id": room_id}


@bp.post("/v1/rooms/<room_id>/messages")
async def send_message(room_id: str) -> tuple[dict[str, Any], int]:
    user = await current_user()
    spec = events.parse_message(await json_body(), tenant().server_name)
    async with recorded_refusal(tenant(), None, actor=user.fqid, room_id=room_id):
        event = await act(room_writes.send_message_txn, room_id, user.fqid, spec)
    return {"event_id": event["event_id"]}, 201


@bp.get("/v1/rooms/<room_id>/messages")
async def messages(room_id: str) -> dict[str, Any]:
    user = await current_user()
    data, nxt = await read(room_writes.messages_page_txn, tenant(), room_id, user.fqid,
                           int_arg("before", None), page_limit())
    return page(data, nxt)


@bp.post("/v1/rooms/<room_id>/messages/<event_id>/reactions")
async def react(room_id: str, event_id: str) -> tuple[dict[str, Any], int]:
    user = await current_user()
    key = events.parse_reaction_key(await json_body())
    event, created = await act(room_writes.react_txn, room_id, user.fqid, event_id, key)
    # 201 for a new reaction; 200 naming the first when it was already there
    return {"event_id": event["event_id"]}, 201 if created else 200


@bp.patch("/v1/rooms/<room_id>/messages/<event_id>")
async def edit_message(room_id: str, event_id: str) -> dict[str, Any]:
    """Edit one's own message: an ``edit`` event, ordered by the host like any other."""
    user = await current_user()
    spec = events.parse_edit(await json_body(), tenant().server_name)
    async with recorded_refusal(tenant(), None, actor=user.fqid, room_id=room_id):
        event = await act(room_writes.edit_txn, room_id, user.fqid, event_id, spec)
    return {"event_id": event["event_id"]}


@bp.delete("/v1/rooms/<room_id>/messages/<event_id>")
async def delete_message(room_id: str, event_id: str) -> dict[str, Any]:
    """Delete a message (its sender, the room's creator or a tenant admin of the host)."""
    user = await current_user()
    async with recorded_refusal(tenant(), None, actor=user.fqid, room_id=room_id):
        event = await act(room_writes.delete_txn, room_id, user.fqid, event_id, user.admin)
    return {"event_id": event["event_id"]}


@bp.delete("/v1/rooms/<room_id>/messages/<event_id>/reactions/<key>")
async def unreact(room_id: str, event_id: str, key: str) -> dict[str, Any]:
    """Take one's reaction off: a ``delete`` of that reaction event."""
    user = await current_user()
    async with recorded_refusal(tenant(), None, actor=user.fqid, room_id=room_id):
        event = await act(room_writes.unreact_txn, room_id, user.fqid, event_id, key)
    return {"event_id": event["event_id"]}


@bp.post("/v1/rooms/<room_id>/read")
async def mark_read(room_id: str) -> dict[str, Any]:
    """Move my read marker up to ``{seq}`` or ``{event_id}``: every device of mine hears."""
    user = await current_user()
    seq, event_id = events.parse_read(await json_body())
    result: dict[str, Any] = await act(reads_db.mark_read_txn, room_id, user.fqid, seq,
                                       event_id)
    return result


@bp.post("/v1/rooms/<room_id>/typing")
async def typing(room_id: str) -> dict[str, Any]:
    """I am typing (or not): to the room's other members' streams, and its servers."""
    from swfed.typing_signals import TYPING, local_audience, spread, targets

    user = await current_user()
    flag = events.parse_typing(await json_body())
    ten, st = tenant(), state()
    room, joined = await read(reads_db.typing_audience_txn, ten, room_id, user.fqid)
    if room is None:
        raise room_not_found(room_id)
    wait = TYPING.users.check((ten.tenant_id, user.local_id), trio.current_time())
    if wait > 0:
        raise rate_limited("typing", user.fqid, "typing signals come at most every two "
                           "seconds after a few: wait", wait)
    me = ten.server_name
    TYPING.add(ten.tenant_id, room_id, user.fqid, flag, st.clock(),
               local_audience(joined, me, user.fqid))
    st.notifier.wake({ten.tenant_id})
    if room.federate and st.federation is not None:
        await spread(st, ten, room_id, user.fqid, flag,
                     targets(room.host, me, joined, user.fqid, me))
    return {"typing": flag}

