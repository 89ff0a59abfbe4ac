"""Identifiers: participant ids, fqids, room ids, event ids (DESIGN §2).

- local participant id: ``@local_id``; fully qualified (fqid):
  ``@local_id:server_name``. Clients see our people by bare id and foreign
  ones by fqid; storage always uses the fqid.
- room id: ``!<random>:<server_name of the hosting tenant>``.
- event, invite and notification ids: UUIDs.

**One canonical server name** (DESIGN §10): lower case, no trailing dot, the
default port 443 left out, an IPv6 address in brackets in its compressed
form, valid DNS labels. :func:`canonical_server_name` makes that form (for
config, the CLI, Host headers and admins' policy lists) and
:func:`is_server_name` says whether a name already is in it: what peers send
us (auth headers, fqids, room ids, descriptors) must be canonical already,
because it is signed as it is written; it is refused, never rewritten.
"""

from __future__ import annotations

import ipaddress
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


#: The port a server name without one means (HTTPS).
DEFAULT_PORT = 443
MAX_SERVER_NAME = 255
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _bad_name(value: object, why: str) -> BadRequest:
    shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else (
        repr(value[:80]) + "…")
    return BadRequest(f"{shown} is not a server name: {why} (expected a DNS name like "
                      "chat.example.com, optionally with :port)", code="SW_BAD_SERVER_NAME")


#: Names already made canonical (a few peers' names recur in every event): at most
#: :data:`MAX_KNOWN_NAMES`, so names nobody uses twice cannot grow it.
_KNOWN_NAMES: dict[str, str] = {}
MAX_KNOWN_NAMES = 4096


def canonical_server_name(value: object) -> str:
    """:func:`_canonical_server_name`, remembered for names seen before."""
    if type(value) is str:
        known = _KNOWN_NAMES.get(value)
        if known is not None:
            return known
    name = _canonical_server_name(value)
    if isinstance(value, str) and len(_KNOWN_NAMES) < MAX_KNOWN_NAMES:
        _KNOWN_NAMES[value] = name
    return name


def _canonical_server_name(value: object) -> str:
    """The one spelling of a server name: lower case, no trailing dot, no ``:443``.

    IPv6 addresses are bracketed and compressed (``[::1]:8448``). Raises
    BadRequest ``SW_BAD_SERVER_NAME`` saying what is wrong: not a string, too
    long, a bad label, a port that is not 1..65535.
    """
    if not isinstance(value, str) or not value:
        raise _bad_name(value, "empty or not a string")
    if len(value) > MAX_SERVER_NAME + 7:
        raise _bad_name(value, f"longer than {MAX_SERVER_NAME} characters")
    name = value.lower()
    port: str | None = None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            raise _bad_name(value, "unclosed [ of an IPv6 address")
        try:
            host = "[" + ipaddress.IPv6Address(name[1:end]).compressed + "]"
        except ValueError:
            raise _bad_name(value, "not an IPv6 address in the brackets") from None
        rest = name[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise _bad_name(value, "expected :port after ]")
            port = rest[1:]
    else:
        host, sep, port_text = name.partition(":")
        if sep:
            if ":" in port_text:
                raise _bad_name(value, "put an IPv6 address in brackets, like [::1]:8448")
            port = port_text
        if host.endswith("."):
            host = host[:-1]
        if not host or len(host) > 253:
            raise _bad_name(value, "empty host or longer than 253 characters")
        if not all(_LABEL_RE.match(label) for label in host.split(".")):
            raise _bad_name(value, "labels are 1-63 of a-z 0-9 and '-' (not first or last), "
                            "separated by single dots")
    if port is not None:
        if not port.isascii() or not port.isdigit() or len(port) > 5 or not (
                1 <= int(port) <= 65535):
            raise _bad_name(value, "the port must be a number 1..65535")
        port = str(int(port))
        if int(port) == DEFAULT_PORT:
            port = None
    return host if port is None else f"{host}:{port}"


def is_server_name(value: object) -> bool:
    """True for a server name already in its canonical form."""
    if not isinstance(value, str) or len(value) > MAX_SERVER_NAME:
        return False
    try:
        return canonical_server_name(value) == value
    except BadRequest:
        return False


def check_local_id(value: object, field: str = "local_id") -> str:
    """Validate a bare local id (no ``@``); raises BadRequest SW_BAD_ID."""
    if not isinstance(value, str) or not LOCAL_ID_RE.match(value):
        raise BadRequest(
            f"{field}: {value!r} is not a valid local id: use 1-64 of a-z 0-9 . _ = - /",
            code="SW_BAD_ID")
    return value


def parse_participant(value: object, home: str, field: str = "fqid") -> Fqid:
    """Parse ``@local_id`` (of ``home``) or ``@local_id:server_name``.

    With a ``home`` (what our users and admins type) the server name is made
    canonical: ``@bob:Peer.Example.com.`` is ``@bob:peer.example.com``.
    Without one (``home=""``: what a peer sent, signed as it is written) it
    must be canonical already. Raises BadRequest SW_BAD_ID naming the field.
    """
    def bad(hint: str = "") -> BadRequest:
        shown = value[:300] if isinstance(value, str) else value
        return BadRequest(
            f"{field}: expected a participant id like @alice or @alice:example.com, "
            f"got {shown!r}{hint}", code="SW_BAD_ID")

    if not isinstance(value, str) or not value.startswith("@"):
        raise bad()
    local, sep, server = value[1:].partition(":")
    if not sep:
        server = home
    if not LOCAL_ID_RE.match(local):
        raise bad()
    try:
        canonical = canonical_server_name(server)
    except BadRequest:
        raise bad() from None
    if canonical != server and not home:
        raise bad(f": the server name must be canonical (@{local}:{canonical}: lower case, "
                  "no trailing dot, no :443)")
    return Fqid(local, canonical)


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


_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    if _UUID_RE.fullmatch(value):  # the form we and our peers write: no parse needed
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
