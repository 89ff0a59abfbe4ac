"""``POST /v1/rooms/{room_id}/call``: a LiveKit token for the room's call.

Calls run on the LiveKit server of the room's host ([calls] in its config).
In a room we host we sign the token ourselves; in a room hosted elsewhere we
ask the host over federation (``POST /_scaiwave/federation/v1/rooms/{room_id}
/call``, answered by :func:`swfed.federation.inbound.call`), so members of
both servers meet in the host's LiveKit room. Tokens are short-lived
(``token_ttl_seconds``) and grant that one room only. The host logs
``call.token_issued`` when it signs one, a member server when it hands one on
(with ``host`` saying whose LiveKit); the token itself is never logged.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from swfed import logs
from swfed.api.common import current_user, read, state, tenant
from swfed.calls import call_token
from swfed.core.errors import SwfedError
from swfed.core.rooms import check_room_federates
from swfed.federation.service import error_of
from swfed.storage import rooms as rooms_db

bp = Blueprint("calls", __name__)


@bp.post("/v1/rooms/<room_id>/call")
async def join_call(room_id: str) -> dict[str, Any]:
    """The caller's token; SW_ROOM_NOT_FOUND unless joined, SW_CALLS_NOT_CONFIGURED (503)
    when the host has no LiveKit, the host's SW_FED_… refusal or a hop error otherwise."""
    user = await current_user()
    ten = tenant()
    st = state()
    room = await read(rooms_db.joined_room_txn, ten, room_id, user.fqid)
    if room.host == ten.server_name:
        return call_token(st, room.host, room_id, user.fqid, user.display_name)
    check_room_federates(room, ten.server_name)
    resp = await st.federation.post(ten, room.host, f"/rooms/{room_id}/call",
                                    {"user": user.fqid, "display_name": user.display_name})
    if resp.status != 200:
        err = error_of(resp, room.host)
        if err.code == "SW_CALLS_NOT_CONFIGURED":
            # The host's own answer (503), not a failure of the hop (error_of's 502).
            raise SwfedError(err.message, code=err.code, status=503)
        raise err
    answer = _host_answer(room.host, resp.body, user.fqid)
    logs.log("call.token_issued", tenant=ten.server_name, room_id=room_id, identity=user.fqid,
             host=room.host)
    return {"room_id": room_id, "host": room.host, **answer, "identity": user.fqid}


def _host_answer(host: str, body: Any, identity: str) -> dict[str, str]:
    """The LiveKit fields of the host's answer, checked; else SW_FED_BAD_RESPONSE."""
    fields = ("livekit_url", "livekit_room", "token", "expires_at")
    body = body if isinstance(body, dict) else {}
    missing = [f for f in fields if not (isinstance(body.get(f), str) and body[f])]
    if missing:
        what = "without " + ", ".join(missing)
    elif body.get("identity", identity) != identity:
        what = f"for {body['identity']!r} instead of {identity}"
    else:
        return {f: body[f] for f in fields}
    raise SwfedError(f"{host} answered the call request {what}; its admin should check its "
                     "swfed version and [calls] config", code="SW_FED_BAD_RESPONSE", status=502)
