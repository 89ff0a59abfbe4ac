"""The media rules as tables: attachments in events, claims, ranges, who may read."""

from __future__ import annotations

from typing import Any

import pytest

from swfed.core import media
from swfed.core.errors import BadRequest, FederationError, SwfedError
from swfed.core.events import check_federated_event, parse_message

SHA = "ab" * 32
GOOD = {"media_id": "A" * 24, "name": "cat.png", "content_type": "image/png", "size": 10,
        "sha256": SHA, "width": 4, "height": 3}


def event(content: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": "0b0e2e35-8f7b-4c39-9d41-33f3a6a1b2c4",
            "room_id": "!abcdefghijklmnopqr:a.test",
            "type": "message", "sender": "@alice:a.test", "origin": "a.test",
            "origin_ts": 1, "content": content, "signatures": {}}


EVENT_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("body only", {"body": "hi"}, None),
    ("attachment only", {"attachments": [GOOD]}, None),
    ("both", {"body": "look", "attachments": [GOOD]}, None),
    ("neither", {}, "body"),
    ("empty list, no body", {"attachments": []}, "body or attachments"),
    ("not a list", {"body": "x", "attachments": {}}, "list"),
    ("too many", {"attachments": [{**GOOD, "media_id": f"{i:024d}"} for i in range(11)]},
     "at most"),
    ("repeated id", {"attachments": [GOOD, GOOD]}, "repeated"),
    ("bad id", {"attachments": [{**GOOD, "media_id": "../x"}]}, "media_id"),
    ("bad hash", {"attachments": [{**GOOD, "sha256": "AB" * 32}]}, "sha256"),
    ("no hash", {"attachments": [{k: v for k, v in GOOD.items() if k != "sha256"}]},
     "sha256"),
    ("negative size", {"attachments": [{**GOOD, "size": -1}]}, "size"),
    ("bool size", {"attachments": [{**GOOD, "size": True}]}, "size"),
    ("bad type", {"attachments": [{**GOOD, "content_type": "<html>"}]}, "content_type"),
    ("slash in name", {"attachments": [{**GOOD, "name": "a/b"}]}, "slashes"),
    ("width alone", {"attachments": [{k: v for k, v in GOOD.items() if k != "height"}]},
     "together"),
    ("huge width", {"attachments": [{**GOOD, "width": 10**6}]}, "width"),
    ("extra field", {"attachments": [{**GOOD, "url": "http://x"}]}, "must be an object"),
]


@pytest.mark.parametrize(("why", "content", "error"), EVENT_CASES,
                         ids=[c[0] for c in EVENT_CASES])
def test_federated_attachments(why: str, content: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert check_federated_event(event(content))
    else:
        with pytest.raises(FederationError) as exc:
            check_federated_event(event(content))
        assert exc.value.code == "SW_FED_BAD_EVENT" and error in exc.value.message


def test_client_message_with_attachments() -> None:
    spec = parse_message({"attachments": [{"media_id": "B" * 24, "name": "a.pdf"}]}, "a.test")
    assert spec.body == "" and spec.attachments[0].media_id == "B" * 24
    assert "body" not in spec.content("a.test")
    with pytest.raises(BadRequest):
        parse_message({}, "a.test")
    with pytest.raises(BadRequest) as exc:
        parse_message({"attachments": [{"media_id": "B" * 24}]}, "a.test")
    assert exc.value.code == "SW_BAD_ATTACHMENT"


HELD = media.MediaFacts("C" * 24, "a.test", "@alice:a.test", "image/png", 10, SHA, True, True)
MAY_ATTACH = [
    ("own upload", "@alice:a.test", HELD, False, True),
    ("someone else's, not seen", "@bob:a.test", HELD, False, False),
    ("someone else's, in my room", "@bob:a.test", HELD, True, True),
    ("unknown", "@alice:a.test", None, True, False),
]


@pytest.mark.parametrize(("why", "sender", "held", "seen", "ok"), MAY_ATTACH,
                         ids=[c[0] for c in MAY_ATTACH])
def test_may_attach(why: str, sender: str, held: media.MediaFacts | None, seen: bool,
                    ok: bool) -> None:
    if ok:
        media.may_attach(sender, held, seen)
    else:
        with pytest.raises(SwfedError) as exc:
            media.may_attach(sender, held, seen)
        assert exc.value.code == "SW_MEDIA_NOT_FOUND" and exc.value.status == 404


def test_fetch_origin_and_fetched_bytes() -> None:
    remote = media.MediaFacts("D" * 24, "b.test", None, "image/png", 10, SHA, False)
    assert media.fetch_origin(remote, "a.test") == "b.test"
    assert media.fetch_origin(HELD, "a.test") is None
    media.check_fetched(remote, 10, SHA)
    for size, sha in ((11, SHA), (10, "cd" * 32)):
        with pytest.raises(FederationError) as exc:
            media.check_fetched(remote, size, sha)
        assert exc.value.code == "SW_FED_MEDIA_MISMATCH"
    assert media.ref_conflicts(remote, {"sha256": "cd" * 32, "size": 10})
    assert not media.ref_conflicts(remote, {"sha256": SHA, "size": 10})


CLAIMS = [
    ("png", "image/png", b"\x89PNG\r\n\x1a\n\0\0\0\0", True),
    ("jpeg", "image/jpeg", b"\xff\xd8\xff\xe0" + b"\0" * 8, True),
    ("gif", "image/gif", b"GIF89a" + b"\0" * 6, True),
    ("webp", "image/webp", b"RIFF\0\0\0\0WEBP", True),
    ("html as png", "image/png", b"<html><script", None),
    ("png as jpeg", "image/jpeg", b"\x89PNG\r\n\x1a\n\0\0\0\0", None),
    ("svg", "image/svg+xml", b"<svg><script>", False),
    ("pdf", "application/pdf", b"%PDF-1.4\n\0\0\0", False),
]


@pytest.mark.parametrize(("why", "ctype", "head", "inline"), CLAIMS, ids=[c[0] for c in CLAIMS])
def test_claims(why: str, ctype: str, head: bytes, inline: bool | None) -> None:
    if inline is None:
        with pytest.raises(SwfedError) as exc:
            media.check_claim(ctype, head, complete=True)
        assert exc.value.code == "SW_MEDIA_NOT_IMAGE" and exc.value.status == 415
    else:
        assert media.check_claim(ctype, head, complete=True) is inline
    assert media.disposition(ctype, bool(inline)).startswith(
        "inline" if inline else "attachment")


RANGES: list[tuple[str | None, tuple[int, int] | None | str]] = [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=0-1,5-6", None), ("bytes=100-", "416"),
    ("bytes=-0", "416"), ("items=0-1", "400"), ("bytes=a-b", "400"), ("bytes=9-3", "400"),
]


@pytest.mark.parametrize(("header", "want"), RANGES, ids=[str(r[0]) for r in RANGES])
def test_ranges(header: str | None, want: tuple[int, int] | None | str) -> None:
    if isinstance(want, str):
        with pytest.raises(SwfedError) as exc:
            media.parse_range(header, 100)
        assert str(exc.value.status) == want
    else:
        assert media.parse_range(header, 100) == want


def test_content_types() -> None:
    assert media.normalize_content_type("Image/PNG; charset=x") == "image/png"
    for bad in (None, "", "png", "multipart/form-data", "a b/c"):
        with pytest.raises(SwfedError) as exc:
            media.normalize_content_type(bad)
        assert exc.value.code == "SW_MEDIA_BAD_TYPE"
