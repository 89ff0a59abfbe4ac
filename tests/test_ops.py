"""``/metrics`` (parsed with prometheus_client's parser) and ``/healthz``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for
from tests.test_federation import accept_invite, bodies

Setup = tuple[TlsNet, ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("ops"), ["a.test", "b.test"])
    with running(a, b):
        a.cli("admin", "tenant", "create", "other.test")
        yield net, a, b


@pytest.fixture(scope="module")
def tokens(setup: Setup) -> dict[str, str]:
    _, a, b = setup
    return {"ra": a.create_user("root", admin=True), "alice": a.create_user("alice"),
            "rb": b.create_user("root", admin=True), "bob": b.create_user("bob"),
            "other": a.create_user("root", admin=True, tenant="other.test")}


@pytest.fixture
async def clients(setup: Setup) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    net, a, b = setup
    ctx = net.ssl_context()
    async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
            httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
        yield ca, cb


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    # the parser names a family without _total, a histogram without _count/_sum/_bucket
    base = sample_name
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        base = base.removesuffix(suffix)
    family = families[base]
    return sum(s.value for s in family.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_metrics_after_real_traffic(clients: Any, tokens: dict[str, str]) -> None:
    ca, cb = clients
    for client, admin, peer in ((ca, tokens["ra"], "b.test"), (cb, tokens["rb"], "a.test")):
        await client.put("/v1/admin/federation/policy", headers=bearer(admin),
                         json={"allowed_peers": [peer]})
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                      headers=bearer(tokens["alice"]))
    room_id = r.json()["room_id"]
    await accept_invite(cb, tokens["bob"], room_id)

    async def joined() -> bool:
        r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(tokens["alice"]))
        return any(m["id"] == "@bob:b.test" and m["membership"] == "join"
                   for m in r.json()["data"])

    await wait_for(joined, what="bob's join on a")
    for i in range(5):
        await ca.post(f"/v1/rooms/{room_id}/messages", json={"body": f"m{i}"},
                      headers=bearer(tokens["alice"]))

    async def arrived() -> bool:
        return len(await bodies(cb, tokens["bob"], room_id)) == 5

    await wait_for(arrived, what="messages on b")
    # a refused request, to count
    r = await ca.post("/_scaiwave/federation/v1/send", json={"origin": "b.test", "events": []},
                      headers={"Host": "a.test"})
    assert r.status_code == 401

    async def scrape() -> dict[str, Any]:
        r = await ca.get("/metrics", headers=bearer(tokens["ra"]))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(r.text)

    async def settled() -> dict[str, Any] | None:
        families = await scrape()
        sent = value(families, "swfed_federation_events_sent_total", tenant="a.test",
                     peer="b.test")
        return families if sent >= 6 else None  # the invite and five messages

    families = await wait_for(settled, what="a's sent counter")
    assert families["swfed_federation_events_sent"].type == "counter"
    assert value(families, "swfed_federation_events_received_total", tenant="a.test",
                 peer="b.test") >= 1  # bob's join
    # unsigned, so no verified origin: counted by reason, without a peer label
    assert value(families, "swfed_federation_requests_refused_total", tenant="a.test",
                 reason="SW_FED_SIGNATURE_MISMATCH") >= 1
    latency = families["swfed_federation_delivery_latency_seconds"]
    assert latency.type == "histogram"
    assert value(families, "swfed_federation_delivery_latency_seconds_count",
                 tenant="a.test", peer="b.test") >= 6
    inf = [s for s in latency.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert inf and inf[0].value >= 6
    assert families["swfed_federation_queue_depth"].type == "gauge"
    assert value(families, "swfed_federation_backoff_failures", tenant="a.test",
                 peer="b.test") == 0
    # only this tenant's series
    assert all(s.labels.get("tenant") == "a.test"
               for f in families.values() for s in f.samples)


async def test_metrics_tenant_isolation_and_auth(setup: Setup, clients: Any,
                                                 tokens: dict[str, str]) -> None:
    ca, _ = clients
    r = await ca.get("/metrics", headers={"Host": "other.test", **bearer(tokens["other"])})
    assert r.status_code == 200
    families = parse(r.text)
    assert "swfed_federation_events_sent" in families
    assert not [s for f in families.values() for s in f.samples]
    r = await ca.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "SW_UNAUTHORIZED"
    r = await ca.get("/metrics", headers=bearer(tokens["alice"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "SW_NOT_ADMIN"


async def test_metrics_show_backoff(setup: Setup, clients: Any, tokens: dict[str, str]) -> None:
    _, _, b = setup
    ca, cb = clients
    r = await ca.post("/v1/rooms", json={"name": "down", "federate": True},
                      headers=bearer(tokens["alice"]))
    room_id = r.json()["room_id"]
    b.stop()
    try:
        r = await ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:b.test"},
                          headers=bearer(tokens["alice"]))
        assert r.status_code == 201

        async def backing_off() -> dict[str, Any] | None:
            r = await ca.get("/metrics", headers=bearer(tokens["ra"]))
            families = parse(r.text)
            failing = value(families, "swfed_federation_backoff_failures", tenant="a.test",
                            peer="b.test")
            return families if failing >= 1 else None

        families = await wait_for(backing_off, what="a to back off from b")
        assert value(families, "swfed_federation_queue_depth", peer="b.test") >= 1
        assert value(families, "swfed_federation_send_failures_total", peer="b.test",
                     reason="SW_FED_PEER_UNREACHABLE") >= 1
        assert value(families, "swfed_federation_backoff_retry_in_seconds",
                     peer="b.test") >= 0
    finally:
        b.start()


async def test_healthz(clients: Any) -> None:
    ca, _ = clients
    r = await ca.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {
        "storage": {"ok": True}, "keys": {"ok": True}, "key_scheduler": {"ok": True},
        "sender": {"ok": True}}}


async def test_healthz_without_a_key(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "nokey", "nokey.test",
                           extra={"federation": {"generate_key_on_start": False}}).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/healthz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "failing" and body["checks"]["keys"]["ok"] is False
        assert "key generate" in body["checks"]["keys"]["error"]
        assert body["checks"]["storage"]["ok"] is True
    finally:
        server.kill()


async def test_spec_log_events(setup: Setup, clients: Any, tokens: dict[str, str]) -> None:
    """The troubleshooting guide's greppable names, each with tenant, peer and reason."""
    _, a, _ = setup
    ca, cb = clients
    await ca.put("/v1/admin/federation/policy", headers=bearer(tokens["ra"]),
                 json={"allowed_peers": ["b.test", "nowhere.invalid"]})
    await cb.put("/v1/admin/federation/policy", headers=bearer(tokens["rb"]),
                 json={"allowed_peers": ["a.test"]})
    # delivered: an invite to bob
    r = await ca.post("/v1/rooms", json={"name": "logs", "federate": True},
                      headers=bearer(tokens["alice"]))
    r = await ca.post(f"/v1/rooms/{r.json()['room_id']}/invites", json={"fqid": "@bob:b.test"},
                      headers=bearer(tokens["alice"]))
    assert r.status_code == 201
    # refused by our policy, and an unsigned request
    r = await ca.post("/v1/me/federated-dms", json={"fqid": "@eve:evil.test"},
                      headers=bearer(tokens["alice"]))
    assert r.status_code == 403
    r = await ca.post("/_scaiwave/federation/v1/send", json={"origin": "b.test", "events": []},
                      headers={"Host": "a.test"})
    assert r.status_code == 401
    # a peer that does not exist: discovery fails, and so does sending to it
    r = await ca.post("/v1/rooms", json={"name": "nowhere", "federate": True},
                      headers=bearer(tokens["alice"]))
    r = await ca.post(f"/v1/rooms/{r.json()['room_id']}/invites",
                      json={"fqid": "@x:nowhere.invalid"}, headers=bearer(tokens["alice"]))
    assert r.status_code == 201
    await wait_for(lambda: a.logs("federation.send.success"), what="a delivered send")
    await wait_for(lambda: [line for line in a.logs("federation.send.failed")
                            if line["peer"] == "nowhere.invalid"], what="a failed send")
    names = ["federation.send.success", "federation.send.failed",
             "federation.signature_verify_failed", "federation.peer_discovery_failed",
             "federation.policy_rejected"]
    for name in names:
        lines = a.logs(name)
        assert lines, name
        for line in lines:
            assert {"tenant", "peer", "reason", "ts", "level"} <= set(line), line
    assert any(line["peer"] == "nowhere.invalid"
               and line["reason"] == "SW_FED_PEER_UNREACHABLE"
               for line in a.logs("federation.peer_discovery_failed"))


def test_text_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    from swfed import logs

    logs.setup("text", "info")
    try:
        logs.log("federation.send.failed", level="warning", tenant="a.test", peer="b.test",
                 reason="SW_FED_PEER_UNREACHABLE")
    finally:
        logs.setup("json", "info")
    line = capsys.readouterr().err.strip()
    assert " warning federation.send.failed tenant=a.test peer=b.test " \
           "reason=SW_FED_PEER_UNREACHABLE" in line


async def test_federation_off_in_config(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "off", "off.test",
                           extra={"federation": {"enabled": False}}).start()
    try:
        admin = server.create_user("root", admin=True)
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/v1/admin/federation/policy", headers=bearer(admin))
            assert r.json()["federation_enabled"] is False
            r = await client.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                                  headers=bearer(admin))
            assert r.status_code == 403 and r.json()["error"]["code"] == "SW_FED_DISABLED"
    finally:
        server.kill()
