"""Signing in (POST /v1/login, /v1/logout), the cookie session, CSRF, and serving the client.

One real server process over HTTP on 127.0.0.1 with a real SQLite file;
passwords set through the real CLI (stdin), Argon2 for real.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from swfed.core.login import LoginRule
from swfed.storage.db import SESSIONS_STAMP
from swfed.storage.files import bump_stamp
from tests.conftest import bearer
from tests.harness import ServerProcess

PASSWORD = "correct horse battery"
CSRF = {"X-SWFed-CSRF": "1"}


def set_password(server: ServerProcess, *args: str, password: str = PASSWORD,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "swfed", "--config", str(server.config_path), *args],
        input=password + "\n", capture_output=True, text=True, timeout=60,
        env=server._environ())
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("webauth"), "localhost").start()
    try:
        for name in ("alice", "mallory", "locked"):
            set_password(srv, "admin", "user", "create", name, "--password", "--json")
        srv.create_user("nopass")
        set_password(srv, "admin", "user", "create", "root", "--admin", "--password")
        yield srv
    finally:
        srv.kill()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as c:
        yield c


async def login(client: httpx.AsyncClient, local_id: str, password: str = PASSWORD,
                **headers: str) -> httpx.Response:
    return await client.post("/v1/login", json={"local_id": local_id, "password": password},
                             headers=headers)


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_login_gives_a_token_and_an_httponly_strict_cookie(
        client: httpx.AsyncClient) -> None:
    r = await login(client, "alice")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fqid"] == "@alice:localhost" and body["id"] == "@alice"
    assert body["token"].startswith("swt_")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("swfed_session=" + body["token"])
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; the TLS test sees Secure and __Host-
    assert r.headers["cache-control"] == "no-store"
    me = await client.get("/v1/me", headers=bearer(body["token"]))
    assert me.json()["fqid"] == "@alice:localhost"
    # "@alice" and "@alice:localhost" name the same account
    assert (await login(client, "@alice:localhost")).status_code == 200


async def test_wrong_password_and_unknown_user_look_the_same(client: httpx.AsyncClient) -> None:
    answers = [await login(client, "mallory", "wrong password"),
               await login(client, "nobody-here", PASSWORD),
               await login(client, "nopass", PASSWORD)]
    for r in answers:
        assert r.status_code == 401
        assert r.json() == {"error": {"code": "SW_LOGIN_FAILED",
                                      "message": "wrong user name or password"}}


async def test_failed_logins_are_rate_limited(client: httpx.AsyncClient) -> None:
    for _ in range(LoginRule().per_pair):
        assert (await login(client, "locked", "not it")).status_code == 401
    r = await login(client, "locked", PASSWORD)  # even the right password waits now
    assert r.status_code == 429 and error_code(r) == "SW_RATE_LIMITED"
    assert "try again in" in r.json()["error"]["message"]
    assert int(r.headers["Retry-After"]) == r.json()["error"]["details"]["retry_after"] >= 1
    # (from this address: tests/test_login_limits.py signs in from another)
    assert (await login(client, "alice")).status_code == 200  # other accounts unaffected


@pytest.mark.parametrize("body, code", [
    ({"local_id": "alice"}, "SW_MISSING_FIELD"),
    ({"local_id": "alice", "password": 5}, "SW_BAD_TYPE"),
    ({"local_id": "alice", "password": "x", "remember": True}, "SW_UNKNOWN_FIELD"),
])
async def test_bad_login_bodies(client: httpx.AsyncClient, body: dict[str, object],
                                code: str) -> None:
    r = await client.post("/v1/login", json=body)
    assert r.status_code == 400 and error_code(r) == code
    r = await client.post("/v1/login", content=b"not json")
    assert r.status_code == 400 and error_code(r) == "SW_BAD_JSON"


async def test_cookie_session_and_csrf(client: httpx.AsyncClient) -> None:
    assert (await login(client, "alice")).status_code == 200  # the client keeps the cookie
    assert (await client.get("/v1/me")).json()["id"] == "@alice"
    # a state-changing request by cookie without the header: refused
    r = await client.post("/v1/rooms", json={"name": "x"})
    assert r.status_code == 403 and error_code(r) == "SW_CSRF"
    # with the header but from another site's page
    r = await client.post("/v1/rooms", json={"name": "x"},
                          headers={**CSRF, "Origin": "https://evil.example"})
    assert r.status_code == 403 and error_code(r) == "SW_CSRF"
    r = await client.post("/v1/rooms", json={"name": "x"},
                          headers={**CSRF, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and error_code(r) == "SW_CSRF"
    # the web client's own request
    host = client.base_url.netloc.decode()
    r = await client.post("/v1/rooms", json={"name": "x"},
                          headers={**CSRF, "Origin": f"http://{host}",
                                   "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201, r.text
    # a login from another site is refused too (login CSRF)
    r = await login(client, "alice", Origin="https://evil.example")
    assert r.status_code == 403 and error_code(r) == "SW_CSRF"


async def test_logout_revokes_the_token(client: httpx.AsyncClient) -> None:
    token = (await login(client, "alice")).json()["token"]
    r = await client.post("/v1/logout", headers=CSRF)
    assert r.status_code == 200 and r.json() == {"logged_out": True}
    assert "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    r = await client.get("/v1/me", headers=bearer(token))
    assert r.status_code == 401 and error_code(r) == "SW_BAD_TOKEN"
    # a bearer client logs out the same way
    token = (await login(client, "alice")).json()["token"]
    client.cookies.clear()
    assert (await client.post("/v1/logout", headers=bearer(token))).status_code == 200
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 401


def db(server: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(Path(server.root) / "data" / "swfed.sqlite3", isolation_level=None)


async def test_login_sessions_expire_and_end_with_a_new_password(
        server: ServerProcess, client: httpx.AsyncClient) -> None:
    api_token = server.create_user("dora")
    set_password(server, "admin", "user", "set-password", "dora")
    first = (await login(client, "dora")).json()["token"]
    second = (await login(client, "dora")).json()["token"]
    client.cookies.clear()
    assert (await client.get("/v1/me", headers=bearer(first))).status_code == 200
    # a session past its expiry is refused (the row is what the server checks)
    conn = db(server)
    conn.execute("UPDATE login_sessions SET expires_at = 0 WHERE local_id = 'dora' AND"
                 " token_hash = (SELECT token_hash FROM login_sessions WHERE local_id = 'dora'"
                 " ORDER BY created_at, rowid LIMIT 1)")
    conn.close()
    # (the edit stands in for time passing; the server remembers the expiry it
    # read, so a hand edit tells it the way the CLI does: the sessions stamp)
    bump_stamp(Path(server.root) / "data" / "swfed.sqlite3", SESSIONS_STAMP)
    r = await client.get("/v1/me", headers=bearer(first))
    assert r.status_code == 401 and error_code(r) == "SW_BAD_TOKEN"
    assert (await client.get("/v1/me", headers=bearer(second))).status_code == 200
    # a new password signs every browser out; the CLI's API token keeps working
    set_password(server, "admin", "user", "set-password", "dora", password="another password")
    assert (await client.get("/v1/me", headers=bearer(second))).status_code == 401
    assert (await client.get("/v1/me", headers=bearer(api_token))).status_code == 200


async def test_cli_passwords(server: ServerProcess, client: httpx.AsyncClient) -> None:
    r = set_password(server, "admin", "user", "set-password", "alice", password="short",
                     check=False)
    assert r.returncode == 1 and "SW_BAD_PASSWORD" in r.stderr
    r = set_password(server, "admin", "user", "set-password", "ghost", check=False)
    assert r.returncode == 1 and "SW_USER_NOT_FOUND" in r.stderr
    r = set_password(server, "admin", "user", "set-password", "mallory", "--json",
                     password="a new long password")
    assert json.loads(r.stdout) == {"id": "@mallory", "password_set": True}
    assert (await login(client, "mallory", "a new long password")).status_code == 200
    assert (await login(client, "mallory")).status_code == 401
    # the stored value is an Argon2id hash, never the password
    conn = db(server)
    stored = [row[0] for row in conn.execute("SELECT hash FROM passwords")]
    conn.close()
    assert stored and all(h.startswith("$argon2id$") for h in stored)
    assert not any("a new long password" in h for h in stored)


async def test_the_client_is_served_with_a_strict_csp(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    # no inline script, no inline style, nothing from another origin
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    for path in re.findall(r"(?:src|href)=\"(/web/[^\"]+)\"", html):
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["cache-control"] == "no-cache"
        again = await client.get(path, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
    js = (await client.get("/web/app.js")).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "http://", "https://"):
        assert sink not in js, sink


@pytest.mark.parametrize("path", ["/web/../app.py", "/web/.hidden", "/web/nope.js",
                                  "/web/%2e%2e/api/auth.py"])
async def test_no_file_outside_the_client(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404 and error_code(r) == "SW_NOT_FOUND"


async def test_doctor_api_needs_an_admin_and_a_server_name(client: httpx.AsyncClient) -> None:
    token = (await login(client, "alice")).json()["token"]
    client.cookies.clear()
    r = await client.post("/v1/admin/federation/peers/peer.example/doctor",
                          headers=bearer(token))
    assert r.status_code == 403 and error_code(r) == "SW_NOT_ADMIN"
    root = (await login(client, "root")).json()["token"]
    client.cookies.clear()
    r = await client.post("/v1/admin/federation/peers/bad name!/doctor", headers=bearer(root))
    assert r.status_code == 400 and error_code(r) == "SW_BAD_SERVER_NAME"
