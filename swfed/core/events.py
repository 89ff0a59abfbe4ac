"""Room events and the validation of what clients send (DESIGN §5, §7).

An event is a plain dict, the same locally and over federation::

    {"event_id": uuid, "room_id": "!…:host", "type": "message",
     "sender": "@bob:origin", "origin": "origin", "origin_ts": ms,
     "content": {…}, "signatures": {origin: {key_id: sig}}}

Types (v1): ``invite``, ``uninvite`` (an invite that ended: refused by the
invitee's server or cancelled), ``member`` (join, leave, decline),
``message`` (body, optional ``in_reply_to`` and ``mentions``), ``reaction``
(``relates_to``, ``key``), ``edit`` (``relates_to`` a message, its new ``body``
and ``mentions``) and ``delete`` (``relates_to`` a message or reaction: its
content is erased on every copy, a tombstone stays). Invites and uninvites
are made and signed by the room's host on behalf of their sender, who may be
a member on another server; every other event is signed by its sender's own server. Validation
raises :class:`~swfed.core.errors.BadRequest` with the offending field named;
nothing here touches storage.
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core.errors import BadRequest
from swfed.core.ids import Fqid, is_uuid, parse_participant
from swfed.core.media import AttachmentSpec, check_event_attachments, parse_client_attachments

ROOM_TYPES = ("standard", "dm", "incognito", "bridge", "sidekick")
EVENT_TYPES = ("invite", "uninvite", "member", "message", "reaction", "edit", "delete")
#: Events that change an earlier event (``relates_to``): its sender's edit, a delete.
CHANGES = ("edit", "delete")
#: Events the room's host signs for a sender of any server.
HOST_SIGNED = ("invite", "uninvite")
MEMBERSHIPS = ("join", "leave", "decline")

MAX_BODY_CHARS = 32_768
MAX_MENTIONS = 50
MAX_ROOM_NAME = 200
MAX_REACTION_KEY = 32
MAX_DISPLAY_NAME = 100


def _require(body: dict[str, Any], name: str, kind: type, *, required: bool,
             default: Any = None) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"{name}: required", code="SW_MISSING_FIELD")
        return default
    value = body[name]
    # bool is an int in Python; never accept one for the other.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"{name}: expected {kind.__name__}, got {type(value).__name__}",
                         code="SW_BAD_TYPE")
    return value


def _text(body: dict[str, Any], name: str, *, required: bool, max_chars: int,
          default: str | None = None) -> str | None:
    value = _require(body, name, str, required=required, default=default)
    if value is None:
        return None
    if not value.strip():
        raise BadRequest(f"{name}: must not be empty", code="SW_BAD_VALUE")
    if len(value) > max_chars:
        raise BadRequest(f"{name}: at most {max_chars} characters, got {len(value)}",
                         code="SW_BAD_VALUE")
    return value


def _no_extra(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise BadRequest(f"unknown field {extra[0]!r}; allowed: {', '.join(allowed)}",
                         code="SW_UNKNOWN_FIELD")


@attrs.frozen
class RoomSpec:
    name: str
    type: str
    federate: bool


def parse_room_spec(body: dict[str, Any]) -> RoomSpec:
    _no_extra(body, ("name", "type", "federate"))
    name = _text(body, "name", required=True, max_chars=MAX_ROOM_NAME)
    room_type = _require(body, "type", str, required=False, default="standard")
    if room_type not in ROOM_TYPES:
        raise BadRequest(f"type: expected one of {', '.join(ROOM_TYPES)}, got {room_type!r}",
                         code="SW_BAD_VALUE")
    federate = _require(body, "federate", bool, required=False, default=False)
    assert name is not None
    return RoomSpec(name=name, type=room_type, federate=federate)


@attrs.frozen
class MessageSpec:
    body: str
    in_reply_to: str | None
    mentions: tuple[Fqid, ...]
    #: Files named by the client (swfed.core.media); "" body when only these.
    attachments: tuple[AttachmentSpec, ...] = ()

    def content(self, home: str) -> dict[str, Any]:
        out: dict[str, Any] = {"body": self.body} if self.body or not self.attachments else {}
        if self.in_reply_to is not None:
            out["in_reply_to"] = self.in_reply_to
        if self.mentions:
            out["mentions"] = [str(m) for m in self.mentions]
        return out


def parse_message(body: dict[str, Any], home: str) -> MessageSpec:
    _no_extra(body, ("body", "in_reply_to", "mentions", "attachments"))
    attachments = parse_client_attachments(body.get("attachments"))
    if attachments and body.get("body") == "":
        body = {k: v for k, v in body.items() if k != "body"}
    text = _text(body, "body", required=not attachments, max_chars=MAX_BODY_CHARS) or ""
    reply = _require(body, "in_reply_to", str, required=False)
    if reply is not None and not is_uuid(reply):
        raise BadRequest(f"in_reply_to: expected an event id, got {reply!r}",
                         code="SW_BAD_VALUE")
    raw_mentions = _require(body, "mentions", list, required=False, default=[])
    if len(raw_mentions) > MAX_MENTIONS:
        raise BadRequest(f"mentions: at most {MAX_MENTIONS}", code="SW_BAD_VALUE")
    mentions: list[Fqid] = []
    for i, m in enumerate(raw_mentions):
        fq = parse_participant(m, home, field=f"mentions[{i}]")
        if fq not in mentions:
            mentions.append(fq)
    assert text is not None
    return MessageSpec(body=text, in_reply_to=reply, mentions=tuple(mentions),
                       attachments=attachments)


def parse_edit(body: dict[str, Any], home: str) -> MessageSpec:
    """``PATCH …/messages/{event_id}``: the new body (and mentions) of a message."""
    _no_extra(body, ("body", "mentions"))
    return parse_message(body, home)


def edit_content(target: str, spec: MessageSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"relates_to": target, "body": spec.body}
    if spec.mentions:
        out["mentions"] = [str(m) for m in spec.mentions]
    return out


def parse_read(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """``POST …/read``: ``{seq}`` or ``{event_id}`` (exactly one): what was read up to."""
    _no_extra(body, ("seq", "event_id"))
    seq = _require(body, "seq", int, required=False)
    event_id = _require(body, "event_id", str, required=False)
    if (seq is None) == (event_id is None):
        raise BadRequest("give seq or event_id (one of them)", code="SW_MISSING_FIELD")
    if seq is not None and not 0 <= seq < 2**40:
        raise BadRequest(f"seq: a room's host seq, 0 to 2^40, got {seq}", code="SW_BAD_VALUE")
    if event_id is not None and not is_uuid(event_id):
        raise BadRequest(f"event_id: expected an event id, got {event_id!r}",
                         code="SW_BAD_VALUE")
    return seq, event_id


def parse_seen(body: dict[str, Any]) -> list[str] | None:
    """``POST /v1/me/notifications/seen``: ``{notification_ids}`` (at most 500), or ``{}``
    for all of them."""
    _no_extra(body, ("notification_ids",))
    ids = _require(body, "notification_ids", list, required=False)
    if ids is None:
        return None
    if len(ids) > 500 or not all(isinstance(i, str) and len(i) <= 64 for i in ids):
        raise BadRequest("notification_ids: at most 500 notification ids",
                         code="SW_BAD_VALUE")
    return list(ids)


def parse_typing(body: dict[str, Any]) -> bool:
    """``POST …/typing``: ``{typing}``, true or false."""
    _no_extra(body, ("typing",))
    return bool(_require(body, "typing", bool, required=True))


def parse_reaction_key(body: dict[str, Any]) -> str:
    _no_extra(body, ("key",))
    key = _text(body, "key", required=True, max_chars=MAX_REACTION_KEY)
    assert key is not None
    return key


def parse_fqid_body(body: dict[str, Any], home: str) -> Fqid:
    _no_extra(body, ("fqid",))
    return parse_participant(_require(body, "fqid", str, required=True), home)


def message_mentions(content: dict[str, Any]) -> list[str]:
    """The fqids a stored message's content mentions: distinct, at most MAX_MENTIONS."""
    raw = content.get("mentions")
    if not isinstance(raw, list):
        return []
    return list(dict.fromkeys(m for m in raw if isinstance(m, str)))[:MAX_MENTIONS]


MAX_EVENT_BYTES = 65_536
#: A participant id's length at most (local id 64, server name 255, '@' and ':').
MAX_FQID_CHARS = 321
MAX_INVITE_MEMBERS = 1000


def event_size(event: dict[str, Any], signable: bytes | None = None) -> int:
    """Bytes of the event as signed (canonical JSON, without ``unsigned``); huge if unencodable.

    ``signable``: the event's bytes without ``signatures`` (core.signing.signable_bytes),
    when already encoded; only the signatures are encoded then.
    """
    from swfed.core.canonical import encode_canonical_json

    try:
        if signable is None:
            return len(encode_canonical_json({k: v for k, v in event.items()
                                              if k != "unsigned"}))
        if "signatures" not in event:
            return len(signable)
        # the same object with one more key: `"signatures":` + its value + a comma
        return len(signable) + len(b'"signatures":,') + len(
            encode_canonical_json(event["signatures"]))
    except (ValueError, TypeError, RecursionError, UnicodeError):
        return 2**31


def check_federated_event(event: Any, *, signable: bytes | None = None) -> dict[str, Any]:
    """Check the shape of an event a peer sent; returns it or raises.

    ``signable``: its bytes without signatures, if already encoded (for the size).

    Raises FederationError SW_FED_BAD_EVENT naming what is wrong. This says
    nothing about the signature or whether the event may enter its room.
    """
    from swfed.core.errors import FederationError
    from swfed.core.ids import room_host

    def bad(why: str) -> FederationError:
        return FederationError(f"malformed event: {why}", code="SW_FED_BAD_EVENT", status=400)

    if not isinstance(event, dict):
        raise bad("not an object")
    for field, kind in (("event_id", str), ("room_id", str), ("type", str), ("sender", str),
                        ("origin", str), ("origin_ts", int), ("content", dict),
                        ("signatures", dict)):
        if not isinstance(event.get(field), kind) or isinstance(event.get(field), bool):
            raise bad(f"{field} missing or not {kind.__name__}")
    if not is_uuid(event["event_id"]):
        raise bad("event_id is not a UUID")
    if not 0 <= event["origin_ts"] < 2**53:
        raise bad("origin_ts out of range")
    size = event_size(event, signable)
    if size > MAX_EVENT_BYTES:
        raise bad(f"the event is {size} bytes, over the limit of {MAX_EVENT_BYTES}")
    if room_host(event["room_id"]) is None:
        raise bad("room_id is not !id:server")
    if event["type"] not in EVENT_TYPES:
        raise bad(f"unknown type {event['type']!r}")
    try:
        sender = parse_participant(event["sender"], "", field="sender")
    except BadRequest as exc:
        raise bad(exc.message) from None
    if ":" not in event["sender"]:
        raise bad("sender is not a fully qualified participant id")
    if event["type"] in HOST_SIGNED:
        if event["origin"] != room_host(event["room_id"]):
            raise bad(f"only the room's host signs {event['type']} events")
    elif sender.server_name != event["origin"]:
        raise bad("sender is not a participant of origin")
    content = event["content"]
    if event["type"] in CHANGES and not is_uuid(content.get("relates_to")):
        raise bad(f"{event['type']} needs relates_to, an event id")
    if event["type"] == "message" and "attachments" in content:  # a file, with or without words
        why = check_event_attachments(content)
        if why is not None:
            raise bad(why)
        if not content["attachments"] and "body" not in content:
            raise bad("a message needs a body or attachments")
    if event["type"] in ("message", "edit"):
        wordless = event["type"] == "message" and bool(content.get("attachments"))
        if (not isinstance(content.get("body", "" if wordless else None), str)
                or len(content.get("body", "")) > MAX_BODY_CHARS):
            raise bad("message body missing or too long")
        mentions = content.get("mentions", [])
        if not isinstance(mentions, list) or len(mentions) > MAX_MENTIONS or not all(
                isinstance(m, str) and len(m) <= MAX_FQID_CHARS for m in mentions):
            raise bad(f"mentions must be at most {MAX_MENTIONS} participant ids")
    elif event["type"] == "reaction":
        if not isinstance(content.get("relates_to"), str) or not isinstance(
                content.get("key"), str) or len(content["key"]) > MAX_REACTION_KEY:
            raise bad("reaction needs relates_to and a short key")
    elif event["type"] == "member":
        if content.get("membership") not in MEMBERSHIPS:
            raise bad("membership must be join, leave or decline")
        name = content.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_DISPLAY_NAME):
            raise bad(f"display_name must be at most {MAX_DISPLAY_NAME} characters")
    elif event["type"] == "invite":
        members = content.get("members", [])
        name = content.get("room_name")
        if not isinstance(members, list) or len(members) > MAX_INVITE_MEMBERS:
            raise bad(f"an invite lists at most {MAX_INVITE_MEMBERS} members")
        if isinstance(name, str) and len(name) > MAX_ROOM_NAME:
            raise bad(f"room_name must be at most {MAX_ROOM_NAME} characters")
    elif event["type"] == "uninvite":
        if not isinstance(content.get("invitee"), str) or not isinstance(
                content.get("invite_id"), str):
            raise bad("uninvite needs invitee and invite_id")
    return event


#: Types a delete leaves a tombstone of (a deleted message's edits go with it).
TOMBSTONE_TYPES = ("message", "reaction", "edit")


def tombstone_of(content: dict[str, Any]) -> dict[str, Any] | None:
    """The ``deleted`` part of a shown event's content, if it is a tombstone."""
    deleted = content.get("deleted")
    return deleted if isinstance(deleted, dict) else None


def check_tombstone(event: Any) -> dict[str, Any] | None:
    """A deleted event as its host serves it in a history page, if that is what this is.

    A delete erases the words on every copy, signed copy included, so the
    host serves such an event as a tombstone: no ``signatures``, its content
    only ``{"deleted": {by, at, event_id}}`` (a reaction's or edit's also
    ``relates_to``). It is taken on the host's word, which vouches for the
    room's order: it carries no words to trust. Returns it, or None when it
    is no tombstone (then it is an ordinary event, checked and verified).
    """
    if not isinstance(event, dict) or "signatures" in event:
        return None
    content = event.get("content")
    if not isinstance(content, dict) or tombstone_of(content) is None:
        return None
    deleted = content["deleted"]
    if (event.get("type") not in TOMBSTONE_TYPES or not is_uuid(event.get("event_id"))
            or not isinstance(event.get("room_id"), str) or set(content) - {
                "deleted", "relates_to"}
            or not all(isinstance(event.get(f), str) and len(event[f]) <= MAX_FQID_CHARS
                       for f in ("sender", "origin"))
            or not isinstance(event.get("origin_ts"), int) or isinstance(event["origin_ts"], bool)
            or not isinstance(deleted.get("by"), str) or len(deleted["by"]) > MAX_FQID_CHARS
            or not isinstance(deleted.get("at"), int) or not is_uuid(deleted.get("event_id"))
            or set(deleted) - {"by", "at", "event_id"}
            or ("relates_to" in content and not is_uuid(content["relates_to"]))):
        return None
    return event

