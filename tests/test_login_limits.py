"""Login limits, session cookies under TLS, and unknown-token floods, on real servers.

Issue 18 [K]: 40 concurrent logins for one account were all verified by Argon2
(RSS 55 -> 1,344 MB) and the right one, last, got in; six wrong passwords
from one address locked the user out from everywhere; a cookie without the
``__Host-`` prefix was taken over TLS; 3,000 random bearer tokens met no limit.

Every client here is a real HTTP client on loopback. The server sees the
address a client connects from, so tests that need several "addresses" bind
their client to other loopback addresses (127.0.0.0/8 is all on ``lo``).
Each test uses its own addresses, so the per-address counts of one do not
reach the next.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from swfed.core.login import LoginRule
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet

PASSWORD = "correct horse battery"
PER_PAIR = LoginRule().per_pair


def add_user(server: ServerProcess, local_id: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swfed", "--config", str(server.config_path), "admin", "user",
         "create", local_id, "--password"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
        env=server._environ())
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("loginlimits"), "localhost").start()
    try:
        for name in ("victim", "bob", "carol"):
            add_user(server, name)
        yield server
    finally:
        server.kill()


def client_from(server: ServerProcess, address: str, **kwargs: object) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (a loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=address, **kwargs)  # type: ignore[arg-type]
    return httpx.AsyncClient(base_url=server.url, transport=transport, timeout=30)


async def login(c: httpx.AsyncClient, local_id: str, password: str) -> httpx.Response:
    return await c.post("/v1/login", json={"local_id": local_id, "password": password})


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak so far) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def memory_from_now(pid: int) -> dict[str, int]:
    """:func:`memory_kb` after resetting the peak to what is resident now (Linux >= 4.0:
    ``clear_refs`` 5), so a later VmHWM is the peak of what came after."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:  # not allowed here: the peak so far stays the baseline
        pass
    return memory_kb(pid)


def assert_retry_after(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "SW_RATE_LIMITED"
    seconds = int(r.headers["Retry-After"])
    assert seconds >= 1 and r.json()["error"]["details"]["retry_after"] == seconds
    return seconds


async def test_concurrent_logins_are_counted_before_argon2_and_memory_stays_bounded(
        srv: ServerProcess) -> None:
    assert srv.proc is not None
    pid = srv.proc.pid
    async with client_from(srv, "127.0.0.10") as c:
        # one login first: the server has verified a password once
        assert (await login(c, "carol", PASSWORD)).status_code == 200
    before = memory_from_now(pid)
    answers: list[httpx.Response | None] = [None] * 40
    sent = 0
    all_wrong_sent = trio.Event()

    async def count_sent(request: httpx.Request) -> None:
        nonlocal sent
        sent += 1
        if sent == 39:
            all_wrong_sent.set()

    async with client_from(srv, "127.0.0.11", limits=httpx.Limits(max_connections=50)) as c:
        c.event_hooks["request"] = [count_sent]

        async def one(i: int, password: str) -> None:
            answers[i] = await login(c, "victim", password)

        async with trio.open_nursery() as nursery:
            for i in range(39):
                nursery.start_soon(one, i, f"wrong password {i}")
            await all_wrong_sent.wait()  # the right password goes last
            nursery.start_soon(one, 39, PASSWORD)
    after = memory_kb(pid)
    got = [r for r in answers if r is not None]
    codes = [r.status_code for r in got]
    print(f"answers: 401={codes.count(401)} 429={codes.count(429)} 200={codes.count(200)};"
          f" VmRSS {before['VmRSS'] // 1024} -> {after['VmRSS'] // 1024} MB,"
          f" VmHWM {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MB")
    assert len(got) == 40 and set(codes) <= {401, 429, 200}, codes
    # at most PER_PAIR wrong passwords were evaluated, the rest refused before Argon2
    assert codes.count(401) <= PER_PAIR
    assert codes[:39].count(429) >= 39 - PER_PAIR
    for r in got:
        if r.status_code == 429:
            assert_retry_after(r)
    # the right password, last, gets in only if the limit had not been reached
    assert codes[39] != 200 or codes[:39].count(401) < PER_PAIR
    # two verifications at once for one account: the peak grows by about 2 x 64 MiB at most
    assert after["VmHWM"] - before["VmHWM"] < 200 * 1024, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 200 * 1024, (before, after)
    # once the limit is reached, the right password from this address waits too
    async with client_from(srv, "127.0.0.11") as c:
        failures = codes[:39].count(401)
        while failures < PER_PAIR:
            r = await login(c, "victim", "still wrong")
            if r.status_code == 401:
                failures += 1
            else:
                assert_retry_after(r)  # busy: only while others are verified
                break
        r = await login(c, "victim", PASSWORD)
        assert_retry_after(r)
        assert "try again in" in r.json()["error"]["message"]


async def test_failures_from_one_address_do_not_lock_out_another(srv: ServerProcess) -> None:
    async with client_from(srv, "127.0.0.20") as attacker:
        for _ in range(PER_PAIR):
            assert (await login(attacker, "bob", "guess")).status_code == 401
        assert_retry_after(await login(attacker, "bob", "guess"))
        assert_retry_after(await login(attacker, "bob", PASSWORD))
    async with client_from(srv, "127.0.0.21") as bob:
        r = await login(bob, "bob", PASSWORD)
        assert r.status_code == 200, r.text


async def test_many_addresses_stop_new_ones_but_not_a_known_good_one(
        srv: ServerProcess) -> None:
    rule = LoginRule()
    async with client_from(srv, "127.0.0.40") as home:
        assert (await login(home, "carol", PASSWORD)).status_code == 200
    # 30 failures for carol from 6 addresses, 5 each (each one's own bar)
    for i in range(rule.per_account // PER_PAIR):
        async with client_from(srv, f"127.0.0.{41 + i}") as guesser:
            for _ in range(PER_PAIR):
                assert (await login(guesser, "carol", "guess")).status_code == 401
    async with client_from(srv, "127.0.0.47") as fresh:
        r = await login(fresh, "carol", PASSWORD)
        assert_retry_after(r)
        assert "a device that signed in before can still sign in" in r.text
    async with client_from(srv, "127.0.0.40") as home:
        assert (await login(home, "carol", PASSWORD)).status_code == 200
    refusals = [line for line in srv.logs("limits.rate_limited") if line["kind"] == "login"]
    assert {"pair", "account"} <= {line["reason"] for line in refusals}, refusals
    assert all(line["address"].startswith("127.0.0.") for line in refusals)
    assert not [line for line in srv.log_lines if "internal_error" in line]


async def test_logins_for_many_accounts_at_once_are_bounded_overall(
        srv: ServerProcess) -> None:
    """60 attempts for 60 names at once: a few verified at a time, the rest wait or 429."""
    from swfed.core.login import verification_slots
    from swfed.storage.passwords import ARGON2_MEMORY_KIB

    assert srv.proc is not None
    before = memory_from_now(srv.proc.pid)
    answers: list[httpx.Response] = []

    async def one(c: httpx.AsyncClient, name: str) -> None:
        answers.append(await login(c, name, "guess"))

    async with client_from(srv, "127.0.0.50") as c1, client_from(srv, "127.0.0.51") as c2, \
            client_from(srv, "127.0.0.52") as c3, trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(one, (c1, c2, c3)[i % 3], f"nobody{i}")
    after = memory_kb(srv.proc.pid)
    codes = [r.status_code for r in answers]
    print(f"answers: 401={codes.count(401)} 429={codes.count(429)};"
          f" VmHWM {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MB")
    assert len(codes) == 60 and set(codes) <= {401, 429}
    for r in answers:
        if r.status_code == 429:
            assert_retry_after(r)
    budget = verification_slots(ARGON2_MEMORY_KIB) * ARGON2_MEMORY_KIB
    assert after["VmHWM"] - before["VmHWM"] < budget + 100 * 1024, (before, after)


def tls_server(root: Path) -> tuple[TlsNet, ServerProcess]:
    net = TlsNet(root / "tls")
    server = ServerProcess(root / "srv", "localhost", tls=net.cert_for("localhost"))
    return net, server


async def test_a_cookie_without_the_host_prefix_is_refused_over_tls(
        tmp_path: Path) -> None:
    net, server = tls_server(tmp_path)
    server.start()
    try:
        add_user(server, "alice")
        async with httpx.AsyncClient(base_url=server.url, verify=net.ssl_context(),
                                     timeout=30) as c:
            r = await login(c, "alice", PASSWORD)
            assert r.status_code == 200, r.text
            token = r.json()["token"]
            assert r.headers["set-cookie"].startswith("__Host-swfed_session=")
            c.cookies.clear()
            me = await c.get("/v1/me", headers={"Cookie": f"__Host-swfed_session={token}"})
            assert me.status_code == 200, me.text
            # the same token under the plain name (which a subdomain or a plain-HTTP
            # page could have set) is not a session here
            me = await c.get("/v1/me", headers={"Cookie": f"swfed_session={token}"})
            assert me.status_code == 401 and me.json()["error"]["code"] == "SW_UNAUTHORIZED"
            # a bearer token is still a bearer token
            assert (await c.get("/v1/me", headers=bearer(token))).status_code == 200
    finally:
        server.kill()


async def test_over_plain_http_the_session_cookie_keeps_its_plain_name(
        srv: ServerProcess) -> None:
    token = srv.create_user("plain")
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        me = await c.get("/v1/me", headers={"Cookie": f"swfed_session={token}"})
        assert me.status_code == 200, me.text
        me = await c.get("/v1/me", headers={"Cookie": f"__Host-swfed_session={token}"})
        assert me.status_code == 401 and me.json()["error"]["code"] == "SW_UNAUTHORIZED"


async def test_a_flood_of_unknown_tokens_waits_and_valid_tokens_do_not(
        srv: ServerProcess) -> None:
    seen = srv.create_user("flooded")
    unseen = srv.create_user("newcomer")
    async with client_from(srv, "127.0.0.30") as flood, \
            client_from(srv, "127.0.0.31") as other:
        assert (await flood.get("/v1/me", headers=bearer(seen))).status_code == 200
        codes = []
        last = None
        for _ in range(400):
            last = await flood.get("/v1/me", headers=bearer("swt_" + secrets.token_hex(16)))
            codes.append(last.status_code)
            if last.status_code == 429:
                break
        assert last is not None and set(codes) <= {401, 429}
        assert_retry_after(last)
        print(f"unknown tokens answered 401 before the first 429: {codes.count(401)}")
        # a token this server knows goes through from the flooding address
        assert (await flood.get("/v1/me", headers=bearer(seen))).status_code == 200
        # one it has not seen since it started could be one more guess: it waits too
        assert_retry_after(await flood.get("/v1/me", headers=bearer(unseen)))
        # another address is not affected, for unknown and new tokens alike
        r = await other.get("/v1/me", headers=bearer("swt_" + secrets.token_hex(16)))
        assert r.status_code == 401 and r.json()["error"]["code"] == "SW_BAD_TOKEN"
        assert (await other.get("/v1/me", headers=bearer(unseen))).status_code == 200
