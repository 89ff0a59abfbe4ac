"""LiveKit access tokens for calls (pure: no clock, no I/O).

Calls run on the LiveKit server of the room's *host*: local members get a
token from their own server, foreign members get one from the host over
federation, so everyone joins the same LiveKit room. A token is a JWT
signed HS256 with the LiveKit API secret, with LiveKit's claims: ``iss``
the API key, ``sub`` the participant identity (our ``@local_id:server``),
``nbf``/``exp`` a short validity, and a ``video`` grant for one room only.

Written here (a few lines of HMAC) rather than with a JWT library: the one
algorithm we need, and the tests cross-check it with PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def livekit_room_name(room_id: str) -> str:
    """The LiveKit room for a swfed room id, the same on every server.

    ``!abc:chat.example.com:8448`` becomes ``sw-abc-chat.example.com-8448``:
    letters, digits, dots, dashes and underscores only.
    """
    return "sw-" + re.sub(r"[^A-Za-z0-9._-]", "-", room_id.removeprefix("!"))


def access_token(*, api_key: str, api_secret: str, identity: str, name: str, room: str,
                 now_s: int, ttl_s: int) -> str:
    """A LiveKit access token letting ``identity`` join ``room`` for ``ttl_s`` seconds."""
    if not api_key or not api_secret:
        raise ValueError("a LiveKit API key and secret are required")
    header = {"alg": "HS256", "typ": "JWT"}
    claims: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "name": name,
        "nbf": now_s,
        "exp": now_s + ttl_s,
        "video": {"room": room, "roomJoin": True, "canPublish": True, "canSubscribe": True,
                  "canPublishData": True},
    }
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":"),
                                                sort_keys=True).encode())
                             for part in (header, claims))
    signature = hmac.new(api_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64url(signature)
