"""LiveKit call tokens for rooms this server hosts (``[calls]``).

Used by the local API for our members and by the federation endpoint for
members on other servers, so both sides meet in the host's LiveKit room.
The token itself is never logged.
"""

from __future__ import annotations

import time
from typing import Any

from swfed import logs
from swfed.core.errors import SwfedError
from swfed.core.livekit import access_token, livekit_room_name


def call_token(st: Any, host: str, room_id: str, identity: str, name: str) -> dict[str, Any]:
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
