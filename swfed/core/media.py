"""Files and images: what an upload is, what a message's attachments say (issue 21).

Pure rules, no I/O, in the manner of :mod:`swfed.core.rooms`:

- an upload's ``Content-Type`` and its first bytes (:func:`sniff`): a file
  that claims an inline image type must start like one, else it is refused;
- which types a browser may show inline (:data:`INLINE_TYPES`, never SVG or
  HTML) and how every other type is served (as an attachment);
- the shape of ``content.attachments`` in a message, the same for what our
  clients send (:func:`parse_client_attachments`) and what peers send
  (:func:`check_event_attachments`): the sha256 and size are inside the
  signed event, so every server checks the bytes it fetches against them;
- who may attach a file (:func:`may_attach`) and which server a file is
  fetched from (:func:`fetch_origin`): the origin of the event that named it;
- HTTP ranges (:func:`parse_range`).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import attrs

from swfed.core.errors import BadRequest, FederationError, SwfedError

#: Served inline (``Content-Disposition: inline``); everything else is an attachment.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_ATTACHMENTS = 10
MAX_NAME_CHARS = 255
MAX_TYPE_CHARS = 127
MAX_DIMENSION = 65_535
MAX_SIZE = 2**53 - 1
#: media ids: what :func:`new_media_id` makes, and what a peer may send (bounded).
MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$")
#: The bytes :func:`sniff` needs to see (a WebP header is 12).
SNIFF_BYTES = 12


def normalize_content_type(raw: str | None) -> str:
    """``image/PNG; charset=x`` -> ``image/png``; raises 415 SW_MEDIA_BAD_TYPE."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    if not value:
        raise SwfedError("the upload needs a Content-Type header naming its type, e.g. "
                         "image/png or application/pdf", code="SW_MEDIA_BAD_TYPE", status=415)
    if not _TYPE_RE.match(value) or value == "multipart/form-data":
        raise SwfedError(f"Content-Type {value[:100]!r} is not a media type: send the raw "
                         "file with its own type (e.g. image/png), not a form",
                         code="SW_MEDIA_BAD_TYPE", status=415)
    return value


def sniff(head: bytes) -> str | None:
    """The inline image type the first bytes are, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_claim(content_type: str, head: bytes, *, complete: bool) -> bool:
    """Does a file that says ``content_type`` and starts with ``head`` show inline?

    An inline image type whose bytes are not that image is refused (415
    SW_MEDIA_NOT_IMAGE) -- an HTML page named image/png is never served as
    one. ``complete``: ``head`` is the whole file (shorter than SNIFF_BYTES).
    """
    if content_type not in INLINE_TYPES:
        return False
    if len(head) < SNIFF_BYTES and not complete:
        return False  # the caller asks again with more bytes
    if sniff(head) != content_type:
        raise SwfedError(f"the file says it is {content_type} but its bytes are not: "
                         "upload it with its real type", code="SW_MEDIA_NOT_IMAGE", status=415)
    return True


def disposition(content_type: str, inline_ok: bool, name: str | None = None) -> str:
    """``Content-Disposition`` for serving: inline only for checked inline images."""
    kind = "inline" if inline_ok and content_type in INLINE_TYPES else "attachment"
    if not name:
        return kind
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{_percent(name)}"


def _percent(text: str) -> str:
    """RFC 5987 percent-encoding of a file name."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


# -- attachments -------------------------------------------------------------------


@attrs.frozen
class AttachmentSpec:
    """What a client names when it attaches a file it may attach."""

    media_id: str
    name: str
    width: int | None = None
    height: int | None = None
    #: If the client also sends these, they must match what the server holds.
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None


def _bad(field: str, why: str) -> BadRequest:
    return BadRequest(f"{field}: {why}", code="SW_BAD_ATTACHMENT")


def _int_field(item: dict[str, Any], key: str, field: str, low: int, high: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(f"{field}.{key}", f"expected an integer {low}..{high}")
    return value


def _dimensions(item: dict[str, Any], field: str) -> tuple[int | None, int | None]:
    width = _int_field(item, "width", field, 1, MAX_DIMENSION)
    height = _int_field(item, "height", field, 1, MAX_DIMENSION)
    if (width is None) != (height is None):
        raise _bad(field, "width and height go together")
    return width, height


def _name(item: dict[str, Any], field: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise _bad(f"{field}.name", f"expected the file's name, 1..{MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or c in "/\\" for c in name):
        raise _bad(f"{field}.name", "no control characters or slashes")
    return name


ATTACHMENT_FIELDS = ("media_id", "name", "content_type", "size", "sha256", "width", "height")


def parse_client_attachments(raw: Any) -> tuple[AttachmentSpec, ...]:
    """``attachments`` as a client sends it; raises 400 SW_BAD_ATTACHMENT."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_ATTACHMENTS:
        raise _bad("attachments", f"expected a list of at most {MAX_ATTACHMENTS}")
    out: list[AttachmentSpec] = []
    for i, item in enumerate(raw):
        field = f"attachments[{i}]"
        if not isinstance(item, dict):
            raise _bad(field, "expected an object {media_id, name}")
        extra = sorted(set(item) - set(ATTACHMENT_FIELDS))
        if extra:
            raise _bad(field, f"unknown field {extra[0]!r}")
        media_id = item.get("media_id")
        if not isinstance(media_id, str) or not MEDIA_ID_RE.match(media_id):
            raise _bad(f"{field}.media_id", "expected the media_id POST /v1/media answered")
        if any(a.media_id == media_id for a in out):
            raise _bad(f"{field}.media_id", "attached twice")
        width, height = _dimensions(item, field)
        ctype = item.get("content_type")
        sha = item.get("sha256")
        if ctype is not None and not isinstance(ctype, str):
            raise _bad(f"{field}.content_type", "expected a string")
        if sha is not None and not isinstance(sha, str):
            raise _bad(f"{field}.sha256", "expected a string")
        out.append(AttachmentSpec(media_id, _name(item, field), width, height, ctype,
                                  _int_field(item, "size", field, 0, MAX_SIZE), sha))
    return tuple(out)


def attachment_content(spec: AttachmentSpec, held: MediaFacts) -> dict[str, Any]:
    """The signed form of one attachment: the client's name and size of image, the
    server's type, size and hash. Raises 400 SW_MEDIA_MISMATCH if the client said
    other values than the server holds."""
    for key, said, known in (("content_type", spec.content_type, held.content_type),
                             ("size", spec.size, held.size), ("sha256", spec.sha256, held.sha256)):
        if said is not None and said != known:
            raise BadRequest(f"attachments: {spec.media_id} has {key} {known!r}, not {said!r}",
                             code="SW_MEDIA_MISMATCH")
    out: dict[str, Any] = {"media_id": spec.media_id, "name": spec.name,
                           "content_type": held.content_type, "size": held.size,
                           "sha256": held.sha256}
    if spec.width is not None and held.content_type.startswith("image/"):
        out["width"], out["height"] = spec.width, spec.height
    return out


def check_event_attachments(content: dict[str, Any]) -> str | None:
    """What is wrong with a peer's ``content.attachments``, or None if nothing."""
    raw = content.get("attachments")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_ATTACHMENTS:
        return f"attachments must be a list of at most {MAX_ATTACHMENTS}"
    seen: set[str] = set()
    for i, item in enumerate(raw):
        field = f"attachments[{i}]"
        if not isinstance(item, dict) or set(item) - set(ATTACHMENT_FIELDS):
            return f"{field} must be an object of {', '.join(ATTACHMENT_FIELDS)}"
        media_id, ctype, size, sha = (item.get(k) for k in (
            "media_id", "content_type", "size", "sha256"))
        if not isinstance(media_id, str) or not MEDIA_ID_RE.match(media_id) or media_id in seen:
            return f"{field}.media_id missing, malformed or repeated"
        seen.add(media_id)
        if not isinstance(ctype, str) or not _TYPE_RE.match(ctype):
            return f"{field}.content_type is not a media type"
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            return f"{field}.size must be an integer >= 0"
        if not isinstance(sha, str) or not SHA256_RE.match(sha):
            return f"{field}.sha256 must be 64 lower-case hex digits"
        try:
            _name(item, field)
            _dimensions(item, field)
        except BadRequest as exc:
            return exc.message
    return None


def event_attachments(event: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored message's attachments (already checked), or []."""
    if event.get("type") != "message":
        return []
    raw = event.get("content", {}).get("attachments")
    return [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []


# -- who may do what -----------------------------------------------------------------


@attrs.frozen
class MediaFacts:
    """What this server holds about one media id."""

    media_id: str
    origin: str
    uploader: str | None
    content_type: str
    size: int
    sha256: str
    stored: bool
    inline_ok: bool = False


def may_attach(sender: str, held: MediaFacts | None, seen_in_my_rooms: bool) -> None:
    """May ``sender`` attach this media? Their own upload, or one that reached a room
    they are in. Raises 404 SW_MEDIA_NOT_FOUND otherwise (ids cannot be probed)."""
    if held is None or (held.uploader != sender and not seen_in_my_rooms):
        media_id = held.media_id if held else "that media"
        raise SwfedError(f"attachments: no media {media_id} of yours: upload it first "
                         "(POST /v1/media)", code="SW_MEDIA_NOT_FOUND", status=404)


def may_read(viewer: str, held: MediaFacts | None, in_a_room_with_it: bool) -> MediaFacts:
    """May a local user read this media: the uploader, or a member of a room that names it."""
    if held is None or (held.uploader != viewer and not in_a_room_with_it):
        raise SwfedError("no such media that you may read", code="SW_MEDIA_NOT_FOUND",
                         status=404)
    return held


def fetch_origin(held: MediaFacts, me: str) -> str | None:
    """The server to fetch the bytes from (the origin of the event that named it), or
    None when there is nothing to fetch (ours, or already here)."""
    if held.stored or held.origin == me:
        return None
    return held.origin


def ref_conflicts(held: MediaFacts | None, attachment: dict[str, Any]) -> bool:
    """A peer's event names a media id we hold under another hash or size: the first
    fact stays (a hostile server cannot re-point an id it did not make)."""
    return held is not None and (held.sha256 != attachment["sha256"]
                                 or held.size != attachment["size"])


def check_fetched(held: MediaFacts, size: int, sha256: str) -> None:
    """The bytes a peer served must be the ones the signed event names.

    Raises FederationError SW_FED_MEDIA_MISMATCH.
    """
    if size != held.size or sha256 != held.sha256:
        raise FederationError(
            f"{held.origin} served media {held.media_id} as {size} bytes with sha256 "
            f"{sha256[:16]}…, but the signed event says {held.size} bytes, {held.sha256[:16]}…",
            code="SW_FED_MEDIA_MISMATCH", status=502)


def not_member_server(media_id: str, requester: str) -> FederationError:
    return FederationError(f"{requester} has no member in a room that references media "
                           f"{media_id[:64]}", code="SW_FED_MEDIA_FORBIDDEN", status=403)


# -- ranges ---------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` -> (first, last) inclusive, or None for the whole file.

    One range only (several are answered whole). Raises 416
    SW_MEDIA_RANGE_NOT_SATISFIABLE for a range that starts past the end, and
    400 SW_BAD_RANGE for one that is malformed.
    """
    if header is None or not header.strip():
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        raise BadRequest(f"Range {header[:60]!r}: expected bytes=first-last",
                         code="SW_BAD_RANGE")
    if "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (first_s.isdigit() or last_s.isdigit()) or (
            first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        raise BadRequest(f"Range {header[:60]!r}: expected bytes=first-last",
                         code="SW_BAD_RANGE")
    if not first_s:  # the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise unsatisfiable(size)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise unsatisfiable(size)
    if last < first:
        raise BadRequest(f"Range {header[:60]!r}: the last byte is before the first",
                         code="SW_BAD_RANGE")
    return first, min(last, size - 1)


def unsatisfiable(size: int) -> SwfedError:
    exc = SwfedError(f"the range starts past the end of the file ({size} bytes)",
                     code="SW_MEDIA_RANGE_NOT_SATISFIABLE", status=416)
    exc.size = size  # type: ignore[attr-defined]
    return exc


def new_media_id() -> str:
    """A fresh media id: 144 random bits, URL-safe (24 characters)."""
    return secrets.token_urlsafe(18)


def fetch_retry_seconds(failures: int) -> int:
    """How long a member server waits before fetching a file again after ``failures``
    failed fetches: 5 s, doubling, at most 10 minutes (a homelab origin that reboots
    is caught up within minutes)."""
    return int(min(600, 5 * 2 ** max(0, min(failures - 1, 10))))
