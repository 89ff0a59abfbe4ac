"""Identifiers: participant ids, fqids, room ids, event ids (DESIGN §2).

- local participant id: ``@local_id``; fully qualified (fqid):
  ``@local_id:server_name``. Clients see our people by bare id and foreign
  ones by fqid; storage always uses the fqid.
- room id: ``!<random>:<server_name of the hosting tenant>``.
- event, invite and notification ids: UUIDs.
"""

from __future__ import annotations

import re
import secrets
import uuid

import attrs

from swfed.core.errors import BadRequest

LOCAL_ID_RE = re.compile(r"^[a-z0-9._=\-/]{1,64}$")
# A DNS name or IPv4 with optional :port, or a bracketed IPv6 with optional port.
SERVER_NAME_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$"
)
ROOM_ID_RE = re.compile(r"^![A-Za-z0-9]{8,32}:(.+)$")


@attrs.frozen
class Fqid:
    """A participant: ``local_id`` at ``server_name``."""

    local_id: str
    server_name: str

    def __str__(self) -> str:
        return f"@{self.local_id}:{self.server_name}"

    def display(self, home: str) -> str:
        """The id a client of ``home`` sees: bare for our own people."""
        return f"@{self.local_id}" if self.server_name == home else str(self)


def is_server_name(value: str) -> bool:
    return len(value) <= 255 and SERVER_NAME_RE.match(value) is not None


def check_local_id(value: object, field: str = "local_id") -> str:
    """Validate a bare local id (no ``@``); raises BadRequest SW_BAD_ID."""
    if not isinstance(value, str) or not LOCAL_ID_RE.match(value):
        raise BadRequest(
            f"{field}: {value!r} is not a valid local id: use 1-64 of a-z 0-9 . _ = - /",
            code="SW_BAD_ID")
    return value


def parse_participant(value: object, home: str, field: str = "fqid") -> Fqid:
    """Parse ``@local_id`` (of ``home``) or ``@local_id:server_name``.

    Raises BadRequest SW_BAD_ID naming the field when it is neither.
    """
    if not isinstance(value, str) or not value.startswith("@"):
        raise BadRequest(
            f"{field}: expected a participant id like @alice or @alice:example.com, "
            f"got {value!r}", code="SW_BAD_ID")
    local, sep, server = value[1:].partition(":")
    if not sep:
        server = home
    server = server.lower()
    if not LOCAL_ID_RE.match(local) or not is_server_name(server):
        raise BadRequest(
            f"{field}: expected a participant id like @alice or @alice:example.com, "
            f"got {value!r}", code="SW_BAD_ID")
    return Fqid(local, server)


def is_fqid(value: object) -> bool:
    """``@local_id:server_name``, both parts valid (a fully qualified participant id)."""
    if not isinstance(value, str) or not value.startswith("@") or ":" not in value:
        return False
    try:
        parse_participant(value, "")
    except BadRequest:
        return False
    return True


def room_host(room_id: str) -> str | None:
    """The server name a room id names as its host, or None if malformed."""
    m = ROOM_ID_RE.match(room_id)
    if m is None or not is_server_name(m.group(1)):
        return None
    return m.group(1)


def new_room_id(server_name: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "!" + "".join(secrets.choice(alphabet) for _ in range(18)) + ":" + server_name


def new_uuid() -> str:
    return str(uuid.uuid4())


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
