"""``POST /v1/rooms/{room_id}/call``: a LiveKit token for the room's call.

Calls run on the LiveKit server of the room's host ([calls] in its config).
In a room we host we sign the token ourselves; in a room hosted elsewhere we
ask the host over federation (``POST /_scaiwave/federation/v1/rooms/{room_id}
/call``, answered by :func:`swfed.federation.inbound.call`), so members of
both servers meet in the host's LiveKit room. Tokens are short-lived
(``token_ttl_seconds``) and grant that one room only.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint

from swfed import logs
from swfed.api.common import current_user, read, state, tenant
from swfed.app import State
from swfed.core.errors import SwfedError
from swfed.core.livekit import access_token, livekit_room_name
from swfed.federation.service import error_of
from swfed.storage import rooms as rooms_db

bp = Blueprint("calls", __name__)


def call_token(st: State, host: str, room_id: str, identity: str, name: str) -> dict[str, Any]:
    """A token for ``identity`` in the call of a room we host; SW_CALLS_NOT_CONFIGURED."""
    calls = st.config.calls
    if not calls.enabled:
        raise SwfedError(f"calls are not set up on {host}, which hosts this room: its admin "
                         "sets [calls] livekit_url, livekit_api_key and livekit_api_secret",
                         code="SW_CALLS_NOT_CONFIGURED", status=503)
    now_s = st.clock() // 1000
    room = livekit_room_name(room_id)
    token = access_token(api_key=calls.livekit_api_key, api_secret=calls.livekit_api_secret,
                         identity=identity, name=name, room=room, now_s=now_s,
                         ttl_s=calls.token_ttl_seconds)
    logs.log("call.token_issued", tenant=host, room_id=room_id, identity=identity, host=host)
    return {"room_id": room_id, "host": host, "livekit_url": calls.livekit_url,
            "livekit_room": room, "identity": identity, "token": token,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                        time.gmtime(now_s + calls.token_ttl_seconds))}


@bp.post("/v1/rooms/<room_id>/call")
async def join_call(room_id: str) -> dict[str, Any]:
    user = await current_user()
    ten = tenant()
    st = state()
    room = await read(rooms_db.joined_room_txn, ten, room_id, user.fqid)
    if room.host == ten.server_name:
        return call_token(st, room.host, room_id, user.fqid, user.display_name)
    rooms_db.check_room_federates(room, ten.server_name)
    resp = await st.federation.post(ten, room.host, f"/rooms/{room_id}/call",
                                    {"user": user.fqid, "display_name": user.display_name})
    if resp.status != 200:
        raise error_of(resp)
    body = resp.body
    for field in ("token", "livekit_url", "livekit_room"):
        if not isinstance(body.get(field), str):
            raise SwfedError(f"{room.host} answered the call request without {field}",
                             code="SW_FED_BAD_RESPONSE", status=502)
    return {"room_id": room_id, "host": room.host, "livekit_url": body["livekit_url"],
            "livekit_room": body["livekit_room"], "identity": user.fqid,
            "token": body["token"], "expires_at": body.get("expires_at")}
