"""Files and images on one real server: upload, attach, serve, and bad input (issue 21).

Every refusal is a clear 4xx with its own code, never a 5xx; what is
refused leaves nothing in ``data_dir/media``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import bearer
from tests.harness import ServerProcess, wait_for

PNG = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x03"
       + b"\x08\x02\x00\x00\x00" + b"\x00" * 40)
PDF = b"%PDF-1.4\n" + os.urandom(3000) + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("media"), "localhost", extra={
        "media": {"max_upload_bytes": 300_000_000, "user_quota_bytes": 400_000_000,
                  "tenant_quota_bytes": 1_000_000_000, "upload_timeout_seconds": 4.0}})
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def tokens(srv: ServerProcess) -> dict[str, str]:
    return {name: srv.create_user(name) for name in ("alice", "bob", "carol", "dora")}


@pytest.fixture
async def http(srv: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
        yield c


def media_files(srv: ServerProcess) -> list[Path]:
    root = srv.root / "data" / "media"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def upload(http: httpx.AsyncClient, token: str, data: bytes,
                 content_type: str) -> httpx.Response:
    return await http.post("/v1/media", content=data,
                           headers={**bearer(token), "Content-Type": content_type})


async def read_answer(stream: trio.SocketStream) -> bytes:
    """One HTTP answer off a raw connection: head and (Content-Length) body."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return got
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


async def room_with(http: httpx.AsyncClient, tokens: dict[str, str], *members: str) -> str:
    r = await http.post("/v1/rooms", json={"name": "files"}, headers=bearer(tokens["alice"]))
    room_id = str(r.json()["room_id"])
    for who in members:
        r = await http.post(f"/v1/rooms/{room_id}/invites", json={"fqid": f"@{who}"},
                            headers=bearer(tokens["alice"]))
        invite_id = r.json()["invite_id"]
        r = await http.post(f"/v1/me/invites/{invite_id}/accept", headers=bearer(tokens[who]))
        assert r.status_code == 200, r.text
    return room_id


async def test_upload_attach_and_serve(http: httpx.AsyncClient, srv: ServerProcess,
                                       tokens: dict[str, str]) -> None:
    r = await upload(http, tokens["alice"], PNG, "image/png")
    assert r.status_code == 201, r.text
    png = r.json()
    assert png["size"] == len(PNG) and png["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert png["content_type"] == "image/png"
    path = srv.root / "data" / "media" / png["sha256"][:2] / png["sha256"]
    assert path.read_bytes() == PNG and (path.stat().st_mode & 0o777) == 0o600
    r = await upload(http, tokens["alice"], PDF, "application/pdf")
    pdf = r.json()

    room_id = await room_with(http, tokens, "bob")
    r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["alice"]), json={
        "attachments": [{"media_id": png["media_id"], "name": "dot.png", "width": 2,
                         "height": 3},
                        {"media_id": pdf["media_id"], "name": "paper.pdf",
                         "sha256": pdf["sha256"]}]})
    assert r.status_code == 201, r.text
    r = await http.get(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["bob"]))
    content = r.json()["data"][0]["content"]
    assert "body" not in content
    assert content["attachments"] == [
        {"media_id": png["media_id"], "name": "dot.png", "content_type": "image/png",
         "size": len(PNG), "sha256": png["sha256"], "width": 2, "height": 3},
        {"media_id": pdf["media_id"], "name": "paper.pdf", "content_type": "application/pdf",
         "size": len(PDF), "sha256": pdf["sha256"]}]

    # bob, in the room, reads both: the image inline, the PDF as an attachment
    r = await http.get(f"/v1/media/{png['media_id']}", headers=bearer(tokens["bob"]))
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == "inline"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert r.headers["etag"] == f'"{png["sha256"]}"'
    r = await http.get(f"/v1/media/{pdf['media_id']}?name=paper.pdf",
                       headers=bearer(tokens["bob"]))
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == pdf["sha256"]
    assert r.headers["content-disposition"].startswith('attachment; filename="paper.pdf"')
    # cached: not sent again
    r = await http.get(f"/v1/media/{pdf['media_id']}", headers={
        **bearer(tokens["bob"]), "If-None-Match": f'"{pdf["sha256"]}"'})
    assert r.status_code == 304
    # ranges
    r = await http.get(f"/v1/media/{pdf['media_id']}", headers={
        **bearer(tokens["bob"]), "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == PDF[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(PDF)}"
    r = await http.get(f"/v1/media/{pdf['media_id']}", headers={
        **bearer(tokens["bob"]), "Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == PDF[-5:]
    r = await http.get(f"/v1/media/{pdf['media_id']}", headers={
        **bearer(tokens["bob"]), "Range": f"bytes={len(PDF)}-"})
    assert r.status_code == 416 and r.json()["error"]["code"] == "SW_MEDIA_RANGE_NOT_SATISFIABLE"
    assert r.headers["content-range"] == f"bytes */{len(PDF)}"
    r = await http.get(f"/v1/media/{pdf['media_id']}", headers={
        **bearer(tokens["bob"]), "Range": "pages=1"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_BAD_RANGE"

    # carol is in no room naming them: as if they did not exist
    for media in (png, pdf):
        r = await http.get(f"/v1/media/{media['media_id']}", headers=bearer(tokens["carol"]))
        assert r.status_code == 404 and r.json()["error"]["code"] == "SW_MEDIA_NOT_FOUND"
    r = await http.get("/v1/media/not-an-id", headers=bearer(tokens["carol"]))
    assert r.status_code == 404
    # nor may she attach them; bob may (they reached a room he is in)
    carol_room = await room_with(http, tokens)
    r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["bob"]), json={
        "body": "again", "attachments": [{"media_id": png["media_id"], "name": "x.png"}]})
    assert r.status_code == 201, r.text
    r = await http.post(f"/v1/rooms/{carol_room}/messages", headers=bearer(tokens["alice"]),
                        json={"body": "x", "attachments": [{"media_id": "A" * 24,
                                                            "name": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "SW_MEDIA_NOT_FOUND"
    r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["alice"]), json={
        "attachments": [{"media_id": pdf["media_id"], "name": "p.pdf", "size": 1}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_MEDIA_MISMATCH"
    r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["alice"]), json={
        "attachments": [{"media_id": pdf["media_id"], "name": "../etc/passwd"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "SW_BAD_ATTACHMENT"
    r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["alice"]),
                        json={"attachments": []})
    assert r.status_code == 400

    r = await http.get("/metrics", headers=bearer(srv.create_user("root", admin=True)))
    assert r.status_code == 200
    assert 'swfed_media_uploads_total{tenant="localhost"}' in r.text
    assert 'swfed_media_downloads_total{tenant="localhost"}' in r.text


async def test_html_claiming_to_be_an_image_is_refused_and_svg_never_inline(
        http: httpx.AsyncClient, srv: ServerProcess, tokens: dict[str, str]) -> None:
    before = media_files(srv)
    html = b"<html><script>alert(1)</script></html>"
    for ctype in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        r = await upload(http, tokens["dora"], html, ctype)
        assert r.status_code == 415 and r.json()["error"]["code"] == "SW_MEDIA_NOT_IMAGE"
    r = await upload(http, tokens["dora"], b"\x89PN", "image/png")
    assert r.status_code == 415
    assert media_files(srv) == before
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    r = await upload(http, tokens["dora"], svg, "image/svg+xml")
    assert r.status_code == 201
    r = await http.get(f"/v1/media/{r.json()['media_id']}", headers=bearer(tokens["dora"]))
    assert r.status_code == 200
    assert r.headers["content-disposition"] == "attachment"
    assert r.headers["content-type"] == "application/octet-stream"
    r = await upload(http, tokens["dora"], html, "text/html")
    r = await http.get(f"/v1/media/{r.json()['media_id']}", headers=bearer(tokens["dora"]))
    assert r.headers["content-disposition"] == "attachment"
    assert r.headers["content-type"] == "application/octet-stream"


async def test_bad_uploads_are_clear_4xx(http: httpx.AsyncClient, srv: ServerProcess,
                                         tokens: dict[str, str]) -> None:
    before = media_files(srv)
    token = tokens["dora"]
    r = await http.post("/v1/media", content=b"abc", headers=bearer(token))
    assert r.status_code == 415 and r.json()["error"]["code"] == "SW_MEDIA_BAD_TYPE"
    r = await upload(http, token, b"abc", "multipart/form-data; boundary=x")
    assert r.status_code == 415 and r.json()["error"]["code"] == "SW_MEDIA_BAD_TYPE"
    r = await http.post("/v1/media", content=b"abc", headers={"Content-Type": "text/plain"})
    assert r.status_code == 401

    # a 10 GB Content-Length: refused before a byte is read
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        await stream.send_all(
            b"POST /v1/media HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pdf\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 10737418240\r\n\r\n" + b"x" * 1000)
        head = await read_answer(stream)
        await stream.aclose()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"SW_MEDIA_TOO_LARGE" in head

    # a slow drip: cut off by the upload time limit, nothing kept
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        await stream.send_all(
            b"POST /v1/media HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pdf\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 100000\r\n\r\n")
        got = b""
        started = time.monotonic()
        while not got:
            await stream.send_all(b"x" * 10)
            with trio.move_on_after(0.5):
                got = await read_answer(stream)
        await stream.aclose()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"SW_MEDIA_UPLOAD_TIMEOUT" in got
    assert 3.5 < time.monotonic() - started < 15

    # fewer bytes than said, then the client goes: nothing kept
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        await stream.send_all(
            b"POST /v1/media HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pdf\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 5000\r\n\r\n" + b"y" * 100)
        await stream.aclose()

    async def settled() -> bool:
        return media_files(srv) == before
    await wait_for(settled, timeout=40, what="no partial upload left")


async def test_quota(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "localhost", extra={
        "media": {"user_quota_bytes": 10_000, "tenant_quota_bytes": 15_000,
                  "max_upload_bytes": 8_000}})
    server.start()
    try:
        a, b = server.create_user("a"), server.create_user("b")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            r = await upload(http, a, b"z" * 9_000, "application/octet-stream")
            assert r.status_code == 413 and r.json()["error"]["code"] == "SW_MEDIA_TOO_LARGE"
            r = await upload(http, a, b"z" * 6_000, "application/octet-stream")
            assert r.status_code == 201
            r = await upload(http, a, b"q" * 6_000, "application/octet-stream")
            assert r.status_code == 507 and r.json()["error"]["code"] == "SW_MEDIA_QUOTA_USER"

            async def chunked(data: bytes) -> AsyncIterator[bytes]:
                for i in range(0, len(data), 1000):
                    yield data[i:i + 1000]
            # no Content-Length: stopped while reading, at the quota
            r = await http.post("/v1/media", content=chunked(b"w" * 6_000), headers={
                **bearer(a), "Content-Type": "application/octet-stream"})
            assert r.status_code == 507 and r.json()["error"]["code"] == "SW_MEDIA_QUOTA_USER"
            r = await upload(http, b, b"r" * 7_000, "application/octet-stream")
            assert r.status_code == 201
            r = await upload(http, b, b"s" * 3_000, "application/octet-stream")
            assert r.status_code == 507 and r.json()["error"]["code"] == "SW_MEDIA_QUOTA_TENANT"
        files = [p for p in (tmp_path / "data" / "media").rglob("*") if p.is_file()]
        assert len(files) == 2
    finally:
        server.kill()


async def test_a_deleted_messages_file_is_collected(tmp_path: Path) -> None:
    """Deleting the only message that names a file releases it: collected like an
    unreferenced upload, and no longer served (issue 20's delete, issue 21's lifecycle)."""
    server = ServerProcess(tmp_path / "srv", "localhost", extra={
        "media": {"unreferenced_hours": 0.001},  # 3.6 s
        "retention": {"interval_seconds": 1.0}})
    server.start()
    try:
        alice = server.create_user("alice")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            sent = (await upload(http, alice, PDF, "application/pdf")).json()
            r = await http.post("/v1/rooms", json={"name": "r"}, headers=bearer(alice))
            room_id = r.json()["room_id"]
            r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(alice), json={
                "attachments": [{"media_id": sent["media_id"], "name": "minutes.pdf"}]})
            assert r.status_code == 201, r.text
            message = r.json()["event_id"]
            media = tmp_path / "srv" / "data" / "media"
            r = await http.delete(f"/v1/rooms/{room_id}/messages/{message}",
                                  headers=bearer(alice))
            assert r.status_code == 200, r.text
            await wait_for(lambda: not list(media.glob("??/*")), timeout=40,
                           what="the deleted message's file collected")
            r = await http.get(f"/v1/media/{sent['media_id']}", headers=bearer(alice))
            assert r.status_code == 404
    finally:
        server.kill()


@pytest.mark.sqlite_only("swfed admin backup copies the SQLite file")
async def test_collection_crash_and_backup(tmp_path: Path) -> None:
    """Unreferenced uploads are collected; kill -9 mid-upload leaves nothing visible and
    no orphan once collected; admin backup copies the files; admin media shows usage."""
    server = ServerProcess(tmp_path / "srv", "localhost", extra={
        "media": {"unreferenced_hours": 0.002},  # 7.2 s
        "retention": {"interval_seconds": 1.0}})
    server.start()
    try:
        alice = server.create_user("alice")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            loose = (await upload(http, alice, b"loose" * 100, "text/plain")).json()
            kept = (await upload(http, alice, PDF, "application/pdf")).json()
            r = await http.post("/v1/rooms", json={"name": "r"}, headers=bearer(alice))
            room_id = r.json()["room_id"]
            r = await http.post(f"/v1/rooms/{room_id}/messages", headers=bearer(alice), json={
                "attachments": [{"media_id": kept["media_id"], "name": "k.pdf"}]})
            assert r.status_code == 201, r.text
            media = tmp_path / "srv" / "data" / "media"

            def placed() -> set[str]:
                return {p.name for p in media.glob("??/*")}
            await wait_for(lambda: placed() == {kept["sha256"]}, timeout=40,
                           what="the unreferenced upload collected")
            r = await http.get(f"/v1/media/{loose['media_id']}", headers=bearer(alice))
            assert r.status_code == 404
            r = await http.get(f"/v1/media/{kept['media_id']}", headers=bearer(alice))
            assert r.status_code == 200 and r.content == PDF

            # kill -9 in the middle of an upload
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(
                b"POST /v1/media HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                b"Authorization: Bearer " + alice.encode() + b"\r\n"
                b"Content-Length: 10000000\r\n\r\n" + b"p" * 3_000_000)
            await wait_for(lambda: any(p.stat().st_size > 0 for p in (media / "tmp").iterdir()),
                           what="the upload on disk")
            server.kill()
            await stream.aclose()
        assert placed() == {kept["sha256"]}  # nothing partial under a content name
        parts = list((media / "tmp").iterdir())
        assert parts
        old = time.time() - 7200
        for p in parts:
            os.utime(p, (old, old))
        server.start()
        await wait_for(lambda: not list((media / "tmp").iterdir()), timeout=30,
                       what="the crashed upload's temp file collected")
        assert placed() == {kept["sha256"]}

        out = server.cli("admin", "backup", str(tmp_path / "b.sqlite3"), "--json").stdout
        info = json.loads(out)
        assert info["media_files"] == 1 and info["media_bytes"] == len(PDF)
        copy = tmp_path / "b.sqlite3.media" / kept["sha256"][:2] / kept["sha256"]
        assert copy.read_bytes() == PDF and (copy.stat().st_mode & 0o777) == 0o600
        usage = json.loads(server.cli("admin", "media", "--json").stdout)["data"]
        assert usage == [{"tenant": "localhost", "uploader": "@alice:localhost", "files": 1,
                          "bytes": len(PDF), "stored": 1}]
    finally:
        server.kill()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_memory_stays_flat_while_200_mb_go_up_and_down(
        http: httpx.AsyncClient, srv: ServerProcess, tokens: dict[str, str]) -> None:
    assert srv.proc is not None
    pid = srv.proc.pid
    size = 200 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    peak = [rss_kb(pid)]
    base = peak[0]

    async def body() -> AsyncIterator[bytes]:
        for i in range(size // len(block)):
            digest.update(block)
            if i % 8 == 0:
                peak[0] = max(peak[0], rss_kb(pid))
            yield block

    r = await http.post("/v1/media", content=body(), headers={
        **bearer(tokens["carol"]), "Content-Type": "application/octet-stream",
        "Content-Length": str(size)})
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == digest.hexdigest() and r.json()["size"] == size
    up_peak = peak[0]
    down = hashlib.sha256()
    got = 0
    async with http.stream("GET", f"/v1/media/{r.json()['media_id']}",
                           headers=bearer(tokens["carol"])) as resp:
        assert resp.status_code == 200
        async for chunk in resp.aiter_bytes():
            down.update(chunk)
            got += len(chunk)
            if got % (8 * 1024 * 1024) < len(chunk):
                peak[0] = max(peak[0], rss_kb(pid))
    assert got == size and down.hexdigest() == digest.hexdigest()
    grew_mb = (peak[0] - base) / 1024
    print(f"RSS: base {base // 1024} MB, peak up {up_peak // 1024} MB, "
          f"peak down {peak[0] // 1024} MB")
    assert grew_mb < 60, f"the server grew by {grew_mb:.0f} MB moving a 200 MB file"


async def test_a_cross_site_upload_is_refused_at_once(
        http: httpx.AsyncClient, srv: ServerProcess, tokens: dict[str, str]) -> None:
    """A cookie upload without the CSRF header: 403 SW_CSRF, even for a large body."""
    before = media_files(srv)
    started = time.monotonic()
    r = await http.post("/v1/media", content=b"\0" * 12_000_000, headers={
        "Content-Type": "application/octet-stream",
        "Cookie": "swfed_session=whatever"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_CSRF", r.text
    assert time.monotonic() - started < 10
    assert media_files(srv) == before
