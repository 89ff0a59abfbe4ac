"""``[server] trusted_proxies``: X-Forwarded-For is believed only from a trusted proxy.

A real server trusts 127.0.0.2 as its proxy; real clients connect from other
loopback addresses (127.0.0.0/8 is all on ``lo``). A forged header from an
untrusted address changes neither the rate-limit key nor the address in the
log; from the proxy, the client it names is what limits and logs see.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from swfed.core.descriptor import FED_PREFIX
from tests.conftest import bearer
from tests.harness import ServerProcess, wait_for

PROXY = "127.0.0.2"
STRANGER = "127.0.0.3"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("proxies"), "localhost",
                           extra={"server": {"trusted_proxies": [PROXY, "::1/128"]}}).start()
    try:
        yield server
    finally:
        server.kill()


def client_from(server: ServerProcess, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.url, transport=transport, timeout=30)


async def failed_login(c: httpx.AsyncClient, local_id: str, xff: str) -> None:
    r = await c.post("/v1/login", json={"local_id": local_id, "password": "wrong"},
                     headers={"X-Forwarded-For": xff})
    assert r.status_code == 401, r.text


async def test_login_log_address(srv: ServerProcess) -> None:
    async with client_from(srv, STRANGER) as stranger, client_from(srv, PROXY) as proxy:
        await failed_login(stranger, "forged", "203.0.113.9")
        await failed_login(proxy, "proxied", "203.0.113.9, 198.51.100.7")

    def address_of(local_id: str) -> str | None:
        lines = [x for x in srv.logs("login.failed") if x.get("local_id") == local_id]
        return lines[-1]["address"] if lines else None

    await wait_for(lambda: address_of("forged") and address_of("proxied"))
    assert address_of("forged") == STRANGER  # the forged header is ignored
    assert address_of("proxied") == "198.51.100.7"  # the rightmost hop not a proxy


async def flood_until_429(c: httpx.AsyncClient, xff: list[str]) -> httpx.Response:
    for i in range(1000):
        r = await c.get("/v1/me", headers={**bearer("swt_" + secrets.token_hex(16)),
                                           "X-Forwarded-For": xff[i % len(xff)]})
        if r.status_code == 429:
            return r
        assert r.status_code == 401, r.text
    raise AssertionError("no 429 after 1000 unknown tokens")


async def test_rate_limit_key(srv: ServerProcess) -> None:
    async with client_from(srv, "127.0.0.4") as stranger, client_from(srv, PROXY) as proxy:
        # a new forged address on every request does not escape the limit
        await flood_until_429(stranger, [f"192.0.2.{i}" for i in range(1, 250)])
        # through the proxy, the client it names is limited, not the proxy
        await flood_until_429(proxy, ["198.51.100.20"])
        r = await proxy.get("/v1/me", headers={**bearer("swt_" + secrets.token_hex(16)),
                                               "X-Forwarded-For": "198.51.100.21"})
        assert r.status_code == 401, r.text
        r = await proxy.get("/v1/me", headers={**bearer("swt_" + secrets.token_hex(16)),
                                               "X-Forwarded-For": "198.51.100.20"})
        assert r.status_code == 429
    whos = {x["who"] for x in srv.logs("limits.rate_limited") if x.get("kind") == "unknown_token"}
    assert "127.0.0.4" in whos
    assert "198.51.100.20" in whos
    assert not any(w.startswith("192.0.2.") for w in whos)
    assert PROXY not in whos


async def test_federation_refusal_address(srv: ServerProcess) -> None:
    async with client_from(srv, "127.0.0.5") as stranger, client_from(srv, PROXY) as proxy:
        r = await stranger.post(FED_PREFIX + "/send", json={},
                                headers={"X-Forwarded-For": "203.0.113.50"})
        assert r.status_code == 401, r.text
        r = await proxy.post(FED_PREFIX + "/send", json={},
                             headers={"X-Forwarded-For": "198.51.100.60",
                                      "Authorization": 'SW-Fed origin="bad_name!",'
                                                       'destination="localhost",key="x",sig="y"'})
        assert 400 <= r.status_code < 500, r.text

    def addresses() -> set[str]:
        return {x["address"] for x in srv.logs() if x.get("verified") is False
                and "address" in x}

    await wait_for(lambda: {"127.0.0.5", "198.51.100.60"} <= addresses())
    assert "203.0.113.50" not in addresses()
    # and the audit trail (the rejected view) names the same addresses
    admin = srv.create_user("auditor", admin=True)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        r = await c.get("/v1/admin/federation/rejected?limit=200", headers=bearer(admin))
    assert r.status_code == 200, r.text
    messages = " ".join(row["message"] for row in r.json()["data"])
    assert "from 127.0.0.5)" in messages and "from 198.51.100.60)" in messages
    assert "203.0.113.50" not in messages
