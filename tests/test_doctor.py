"""``swfed doctor``: break a real two-server setup on purpose, one way at a time.

Each time the doctor must name the problem (the failing check and its code)
and give the fix the troubleshooting guide gives, and exit non-zero; on a
healthy setup every check is ok and it exits 0.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

from swfed.core.signing import generate_keypair
from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for
from tests.hostile import HostilePeer
from tests.test_federation_refusals import v2_only

Setup = tuple[TlsNet, ServerProcess, ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    net, (a, b, c) = federated_servers(tmp_path_factory.mktemp("doctor"),
                                       ["a.test", "b.test", "c.test"])
    with running(a, b):
        yield net, a, b, c  # c is never started: a fake v2-only peer takes its port


@pytest.fixture(scope="module")
def admins(setup: Setup) -> dict[str, str]:
    _, a, b, _ = setup
    return {"a": a.create_user("root", admin=True), "b": b.create_user("root", admin=True),
            "bob": b.create_user("bob")}


@pytest.fixture
async def clients(setup: Setup, admins: dict[str, str]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    net, a, b, _ = setup
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        for client, admin, peer in ((ca, admins["a"], "b.test"), (cb, admins["b"], "a.test")):
            r = await client.put("/v1/admin/federation/policy", headers=bearer(admin), json={
                "default_mode": "invite_only", "allowed_peers": [peer, "c.test"],
                "denied_peers": []})
            assert r.status_code == 200, r.text
        yield ca, cb


async def doctor(server: ServerProcess, peer: str, *extra: str,
                 config: Path | None = None) -> tuple[int, dict[str, Any]]:
    args = ["doctor", peer, "--json", *extra]
    if config is not None:
        # the same data directory, another config file
        import subprocess
        import sys

        def run() -> Any:
            return subprocess.run([sys.executable, "-m", "swfed", "--config", str(config),
                                   *args], capture_output=True, text=True, timeout=60,
                                  env=server._environ())
    else:
        def run() -> Any:
            return server.cli(*args, check=False)

    result = await trio.to_thread.run_sync(run)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, {c["name"]: c for c in report["checks"]}


def problems(checks: dict[str, Any]) -> dict[str, Any]:
    return {name: c for name, c in checks.items() if c["status"] == "problem"}


async def test_healthy_setup(setup: Setup, clients: Any) -> None:
    _, a, _, _ = setup
    rc, checks = await doctor(a, "b.test")
    assert rc == 0, problems(checks)
    assert list(checks) == ["own_config", "own_descriptor", "peer_reachable", "peer_tls",
                            "peer_descriptor", "protocol_versions", "our_policy", "clock_skew",
                            "their_policy", "key_cache", "queue"]
    assert all(c["status"] == "ok" for c in checks.values()), checks
    # the human form: one line per check
    text = a.cli("doctor", "b.test").stdout.splitlines()
    assert len(text) == 12 and text[-1] == "no problem found"
    assert text[0].startswith("ok") and "own_config" in text[0]


async def test_wrong_ca(setup: Setup, clients: Any, tmp_path: Path) -> None:
    _, a, _, _ = setup
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    config = tmp_path / "wrong-ca.toml"
    text = a.config_path.read_text()
    config.write_text(text.replace(json.dumps(str(setup[0].ca_file)), json.dumps(str(other_ca))))
    rc, checks = await doctor(a, "b.test", config=config)
    assert rc == 1
    assert checks["peer_reachable"]["status"] == "ok"
    tls = checks["peer_tls"]
    assert tls["status"] == "problem" and tls["code"] == "SW_FED_TLS_FAILED"
    assert "ca_file" in tls["fix"]
    assert checks["peer_descriptor"]["status"] == "skipped"


async def test_peer_down(setup: Setup, clients: Any) -> None:
    _, a, b, _ = setup
    b.stop()
    try:
        rc, checks = await doctor(a, "b.test")
    finally:
        b.start()
    assert rc == 1
    down = checks["peer_reachable"]
    assert down["status"] == "problem" and down["code"] == "SW_FED_PEER_UNREACHABLE"
    assert "down" in down["fix"] and "[federation.resolve]" in down["fix"]
    assert checks["own_descriptor"]["status"] == "ok"


async def test_peer_denies_us(setup: Setup, clients: Any, admins: dict[str, str]) -> None:
    _, a, _, _ = setup
    _, cb = clients
    await cb.put("/v1/admin/federation/policy", headers=bearer(admins["b"]),
                 json={"denied_peers": ["a.test"]})
    rc, checks = await doctor(a, "b.test")
    assert rc == 1
    assert list(problems(checks)) == ["their_policy"]
    assert checks["their_policy"]["code"] == "SW_FED_PEER_DENIED"
    assert "deny list" in checks["their_policy"]["fix"]
    # and when it is our policy that refuses
    await cb.put("/v1/admin/federation/policy", headers=bearer(admins["b"]),
                 json={"denied_peers": [], "allowed_peers": []})
    rc, checks = await doctor(a, "b.test")
    assert checks["their_policy"]["code"] == "SW_FED_PEER_UNKNOWN"
    assert "allowed_peers" in checks["their_policy"]["fix"]
    ca, _ = clients
    await ca.put("/v1/admin/federation/policy", headers=bearer(admins["a"]),
                 json={"default_mode": "closed"})
    rc, checks = await doctor(a, "b.test")
    assert checks["our_policy"]["code"] == "SW_FED_CLOSED"
    assert "/v1/admin/federation/policy" in checks["our_policy"]["fix"]


async def test_skewed_clock(setup: Setup, clients: Any) -> None:
    _, a, b, _ = setup
    b.stop()
    b.env["SWFED_TEST_CLOCK_OFFSET_MS"] = "120000"
    try:
        b.start()
        rc, checks = await doctor(a, "b.test")
    finally:
        b.stop()
        del b.env["SWFED_TEST_CLOCK_OFFSET_MS"]
        b.start()
    assert rc == 1
    skew = checks["clock_skew"]
    assert skew["status"] == "problem" and "ahead" in skew["detail"]
    assert "NTP" in skew["fix"]
    # b refused our probe for the same reason, and the doctor says so
    assert checks["their_policy"]["code"] == "SW_FED_SIGNATURE_MISMATCH"
    assert "NTP" in checks["their_policy"]["fix"]


async def test_no_common_protocol_version(setup: Setup, clients: Any) -> None:
    net, a, _, c = setup
    keypair = generate_keypair()
    peer = HostilePeer(net, "c.test", c.port, keypair)
    peer.descriptor = lambda: v2_only(keypair)
    async with peer.serving():
        rc, checks = await doctor(a, "c.test")
    assert rc == 1
    versions = checks["protocol_versions"]
    assert versions["status"] == "problem" and versions["code"] == "SW_FED_PROTOCOL_VERSION"
    assert "v2" in versions["detail"] and "upgrade" in versions["fix"]


async def test_rotated_key_not_yet_fetched(setup: Setup, clients: Any,
                                           admins: dict[str, str]) -> None:
    _, a, b, _ = setup
    ca, cb = clients
    # a caches b's key (the refresh call fetches it)
    r = await ca.post("/v1/admin/federation/foreign/@bob:b.test/refresh",
                      headers=bearer(admins["a"]))
    assert r.status_code == 200, r.text
    old_key = r.json()["key_id"]
    new_key = json.loads(b.cli("admin", "federation", "key", "rotate", "--json").stdout)["key_id"]

    async def served() -> bool:
        r = await cb.get("/.well-known/scaiwave/server", headers={"Host": "b.test"})
        return bool(r.json()["key_id"] == new_key)

    await wait_for(served, what="b to publish its new key")
    rc, checks = await doctor(a, "b.test")
    assert rc == 1
    cache = checks["key_cache"]
    assert cache["status"] == "problem"
    assert old_key in cache["detail"] and new_key in cache["detail"]
    assert "/v1/admin/federation/foreign/" in cache["fix"]
    # the fix works
    r = await ca.post("/v1/admin/federation/foreign/@bob:b.test/refresh",
                      headers=bearer(admins["a"]))
    assert r.json()["key_changed"] is True
    rc, checks = await doctor(a, "b.test")
    assert rc == 0, problems(checks)


async def test_queue_with_last_error(setup: Setup, clients: Any,
                                     admins: dict[str, str]) -> None:
    _, a, b, _ = setup
    ca, cb = clients
    r = await ca.post("/v1/rooms", json={"name": "q", "federate": True},
                      headers=bearer(admins["a"]))
    room_id = r.json()["room_id"]
    await cb.put("/v1/admin/federation/policy", headers=bearer(admins["b"]),
                 json={"federation_enabled": False})
    r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:b.test"},
                      headers=bearer(admins["a"]))
    assert r.status_code == 201, r.text

    async def failed() -> bool:
        r = await ca.get("/v1/admin/federation/peers", headers=bearer(admins["a"]))
        return any(p["server_name"] == "b.test" and p["last_error"]
                   for p in r.json()["data"])

    await wait_for(failed, what="a's queue to b to fail")
    rc, checks = await doctor(a, "b.test")
    assert rc == 1
    queue = checks["queue"]
    assert queue["status"] == "problem" and queue["code"] == "SW_FED_DISABLED"
    assert "/v1/admin/federation/peers/b.test/retry" in queue["fix"]
    assert checks["their_policy"]["code"] == "SW_FED_DISABLED"
    await cb.put("/v1/admin/federation/policy", headers=bearer(admins["b"]),
                 json={"federation_enabled": True})


async def test_bad_peer_name(setup: Setup) -> None:
    _, a, _, _ = setup
    result = a.cli("doctor", "not a name!", check=False)
    assert result.returncode == 1 and "SW_BAD_SERVER_NAME" in result.stderr
