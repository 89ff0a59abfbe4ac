"""Files and images in the browser (issue 21): real Chromium, two TLS servers.

alice of a.test attaches an image and a PDF in a room with bob of b.test;
bob sees the image inline at the size alice's client measured (set before
the bytes arrive: no layout jump) and downloads the PDF with the same
sha256. A file over the limit is refused before uploading; an HTML file
named like an image never runs.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running
from tests.test_web_client import add_user, all_css, css, sign_in
from tests.web_harness import browser, have_browser, wait_until

pytestmark = pytest.mark.skipif(
    have_browser() is not None and os.environ.get("CI") != "true",
    reason=f"needs Debian's chromium and chromium-driver: {have_browser()}")


def png(width: int, height: int) -> bytes:
    """A real PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\x20\x80\xc0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[TlsNet, ServerProcess, ServerProcess, dict[str, str]]]:
    extra = {"media": {"max_upload_bytes": 2_000_000}}
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("webmedia"), ["a.test", "b.test"],
                                    extra={"a.test": extra, "b.test": extra})
    with running(a, b):
        tokens = {"alice": add_user(a, "alice", "--admin"), "bob": add_user(b, "bob"),
                  "root_b": b.create_user("root", admin=True)}
        yield net, a, b, tokens


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: SWFED_SCREENSHOTS=docs/client refreshes docs/client/room-files.png."""
    target = Path(os.environ.get("SWFED_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def open_room(d: Any, room_id: str) -> None:
    item = wait_until(d, lambda: css(d, f'.room-item[data-room-id="{room_id}"]'),
                      what="the room in the list")
    item.click()
    wait_until(d, lambda: css(d, ".room-item.active").get_attribute("data-room-id") == room_id,
               what="the room to open")


SHA256_JS = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.arrayBuffer())
  .then(b => crypto.subtle.digest('SHA-256', b))
  .then(h => done([...new Uint8Array(h)].map(x => x.toString(16).padStart(2, '0')).join('')))
  .catch(e => done('error: ' + e));
"""


def test_an_image_and_a_pdf_across_servers(
        fed: tuple[TlsNet, ServerProcess, ServerProcess, dict[str, str]],
        tmp_path: Path, shots: Path) -> None:
    net, a, b, tokens = fed
    ctx = net.ssl_context()
    api_a = httpx.Client(base_url=a.url, verify=ctx, timeout=20, headers={"Host": "a.test"})
    api_b = httpx.Client(base_url=b.url, verify=ctx, timeout=20, headers={"Host": "b.test"})
    with api_a, api_b:
        for api, token in ((api_a, tokens["alice"]), (api_b, tokens["root_b"])):
            r = api.put("/v1/admin/federation/policy", headers=bearer(token),
                        json={"default_mode": "open"})
            assert r.status_code == 200, r.text
        r = api_a.post("/v1/rooms", json={"name": "photos", "federate": True},
                       headers=bearer(tokens["alice"]))
        room_id = r.json()["room_id"]
        r = api_a.post("/v1/rooms", json={"name": "elsewhere"}, headers=bearer(tokens["alice"]))
        other_room = r.json()["room_id"]
        r = api_a.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:b.test"},
                       headers=bearer(tokens["alice"]))
        invite_id = r.json()["invite_id"]
        deadline = time.monotonic() + 20
        while True:  # the invite reaches b.test through federation
            r = api_b.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(tokens["bob"]))
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)  # a poll interval for the invite to arrive, not a wait for it

    image = tmp_path / "sunset.png"
    image.write_bytes(png(240, 120))
    pdf = tmp_path / "report.pdf"
    pdf_bytes = b"%PDF-1.4\n" + os.urandom(300_000) + b"\n%%EOF\n"
    pdf.write_bytes(pdf_bytes)
    big = tmp_path / "huge.bin"
    big.write_bytes(b"\0" * 2_500_000)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"<html><script>window.__pwned=1</script></html>")

    with browser(["a.test", "b.test"]) as alice, browser(["a.test", "b.test"]) as bob:
        sign_in(alice, f"https://a.test:{a.port}", "alice")
        open_room(alice, room_id)
        sign_in(bob, f"https://b.test:{b.port}", "bob")
        open_room(bob, room_id)

        # too large: said before anything is sent
        css(alice, "#attach-input").send_keys(str(big))
        wait_until(alice, lambda: "Too large" in css(alice, "#composer-error").text,
                   what="the too-large message")
        assert "huge.bin" in css(alice, "#composer-error").text

        css(alice, "#attach-input").send_keys(str(image))
        wait_until(alice, lambda: all_css(alice, "#events .msg .media-image"),
                   what="alice's image in her timeline")
        css(alice, "#attach-input").send_keys(str(pdf))
        wait_until(alice, lambda: all_css(alice, "#events .msg .media-card"),
                   what="alice's PDF card")

        # bob: the image inline, sized before its bytes came
        img = wait_until(bob, lambda: (all_css(bob, "#events .msg .media-image") or [None])[0],
                         what="the image on b.test")
        assert img.get_attribute("width") == "240" and img.get_attribute("height") == "120"
        wait_until(bob, lambda: bob.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) == 240,
            what="the image's bytes fetched from a.test and shown", timeout=40)
        card = wait_until(bob, lambda: (all_css(bob, "#events .msg .media-card") or [None])[0],
                          what="the PDF card on b.test")
        assert "report.pdf" in card.text and "application/pdf" in card.text
        link = css(card, "a.media-download")
        assert link.get_attribute("download") == "report.pdf"
        got = bob.execute_async_script(SHA256_JS, link.get_attribute("href"))
        assert got == hashlib.sha256(pdf_bytes).hexdigest()

        bob.save_screenshot(str(shots / "room-files.png"))
        # click to enlarge
        css(bob, "#events .msg .media-thumb").click()
        big_view = wait_until(bob, lambda: css(bob, "dialog.media-view[open] img"),
                              what="the enlarged image")
        wait_until(bob, lambda: bob.execute_script("return arguments[0].naturalWidth",
                                                   big_view) == 240, what="the large view")

        # drag-and-drop and paste, as the browser hands them over (a File in a DataTransfer),
        # after the room view was built again
        open_room(alice, other_room)
        open_room(alice, room_id)
        alice.execute_script("""
            const dt = new DataTransfer();
            dt.items.add(new File(['dropped bytes'], 'dropped.txt', {type: 'text/plain'}));
            document.querySelector('#main').dispatchEvent(
              new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            const pt = new DataTransfer();
            pt.items.add(new File(['pasted bytes'], 'pasted.txt', {type: 'text/plain'}));
            document.querySelector('#composer-input').dispatchEvent(
              new ClipboardEvent('paste', {clipboardData: pt, bubbles: true, cancelable: true}));
        """)
        for name in ("dropped.txt", "pasted.txt"):
            wait_until(bob, lambda name=name: [c for c in all_css(bob, "#events .media-card")
                                               if name in c.text], what=f"{name} on b.test")
        # sent once each (the drop zone outlives room views: one listener)
        r = httpx.get(f"{a.url}/v1/rooms/{room_id}/messages?limit=50", verify=ctx,
                      headers={**bearer(tokens["alice"]), "Host": "a.test"})
        names = [att["name"] for e in r.json()["data"]
                 for att in e["content"].get("attachments", [])]
        assert names.count("dropped.txt") == 1 and names.count("pasted.txt") == 1, names

        # an HTML file named .png: refused by the server, never run
        css(alice, "#attach-input").send_keys(str(fake))
        wait_until(alice, lambda: "SW_MEDIA_NOT_IMAGE" in css(alice, "#composer-error").text,
                   what="the fake image refused")
        assert alice.execute_script("return window.__pwned") is None
        assert bob.execute_script("return window.__pwned") is None
