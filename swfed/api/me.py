"""``/v1/me``: who I am, my rooms, my notifications, my invites."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from swfed.api.common import (
    act,
    current_user,
    int_arg,
    json_body,
    page,
    page_limit,
    read,
    recorded_refusal,
    state,
    tenant,
)
from swfed.core.errors import BadRequest, FederationError, NotFound
from swfed.core.events import parse_fqid_body, parse_seen
from swfed.core.ids import Fqid
from swfed.core.policy import decide_peer
from swfed.core.rooms import Room
from swfed.federation import membership
from swfed.federation.service import error_of
from swfed.storage import notifications as notifications_db
from swfed.storage import reads as reads_db
from swfed.storage import room_writes

bp = Blueprint("me", __name__)


def room_json(room: Room) -> dict[str, Any]:
    return {"room_id": room.room_id, "name": room.name, "type": room.type,
            "federate": room.federate, "federated": room.federated, "host": room.host}


@bp.get("/v1/me")
async def me() -> dict[str, Any]:
    user = await current_user()
    return {"id": f"@{user.local_id}", "fqid": user.fqid, "display_name": user.display_name,
            "admin": user.admin, "server_name": user.server_name}


@bp.get("/v1/me/rooms")
async def my_rooms() -> dict[str, Any]:
    user = await current_user()
    rooms = await read(reads_db.my_rooms_txn, tenant(), user.fqid)
    return {"data": [{**room_json(r), **counts} for r, counts in rooms]}


@bp.get("/v1/me/notifications")
async def notifications() -> dict[str, Any]:
    user = await current_user()
    data, nxt = await read(notifications_db.notifications_txn, tenant(), user.local_id,
                           int_arg("before", None), page_limit())
    return page(data, nxt)


@bp.post("/v1/me/notifications/seen")
async def notifications_seen() -> dict[str, Any]:
    """Mark my notifications seen (``notification_ids``, or all): every device hears of it."""
    user = await current_user()
    ids = parse_seen(await json_body())
    changed = await act(reads_db.seen_txn, user.local_id, ids)
    return {"seen": changed}


async def _answer(invite_id: str, accept: bool) -> dict[str, Any]:
    """In a room hosted elsewhere, the answer holds once the host has ordered it."""
    user = await current_user()
    # invite ids are unique per room: ?room_id= names the room when two hosts used one id
    named = request.args.get("room_id") or None
    room_id = await membership.change(state(), tenant(), "accept" if accept else "decline",
                                      user.fqid, invite_id=invite_id, room_id=named,
                                      display_name=user.display_name)
    if room_id is None:
        room_id = await act(room_writes.answer_invite_txn, invite_id, user.fqid, accept,
                            user.display_name, named)
    return {"room_id": room_id}


@bp.post("/v1/me/invites/<invite_id>/accept")
async def accept_invite(invite_id: str) -> dict[str, Any]:
    return await _answer(invite_id, True)


@bp.post("/v1/me/invites/<invite_id>/decline")
async def decline_invite(invite_id: str) -> dict[str, Any]:
    return await _answer(invite_id, False)


@bp.post("/v1/me/federated-dms")
async def federated_dm() -> tuple[dict[str, Any], int]:
    """A 1:1 room with a foreign participant, and its invite, in one step."""
    user = await current_user()
    ten = tenant()
    invitee = parse_fqid_body(await json_body(), ten.server_name)
    if invitee.server_name == ten.server_name:
        raise BadRequest(f"{invitee.display(ten.server_name)} is on this server: a federated "
                         "DM needs a participant of another server", code="SW_NOT_FOREIGN")
    async with recorded_refusal(ten, invitee.server_name, actor=user.fqid):
        decide_peer(ten.policy, invitee.server_name)
        await _check_foreign_user(invitee)
        room = await act(room_writes.create_dm_txn, user.fqid, user.display_name, invitee)
    return room_json(room), 201


async def _check_foreign_user(invitee: Fqid) -> None:
    """Fail fast when the peer says no such user; a peer that is down gets it queued."""
    fed = state().federation
    try:
        resp = await fed.get(tenant(), invitee.server_name, f"/profile/{invitee.local_id}")
    except FederationError as exc:
        if exc.code in ("SW_FED_PROTOCOL_VERSION", "SW_FED_BAD_DESCRIPTOR", "SW_FED_NO_KEY",
                        "SW_FED_PRIVATE_ADDRESS"):
            raise
        return  # unreachable now: the invite waits in the outbox
    if resp.status == 404:
        raise NotFound(f"{invitee} does not exist on {invitee.server_name}",
                       code="SW_USER_NOT_FOUND")
    if resp.status >= 400:
        raise error_of(resp, invitee.server_name)
