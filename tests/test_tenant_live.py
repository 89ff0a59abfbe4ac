"""A tenant created while its server runs federates from its very first request.

``b.test`` serves a second tenant ``c.test`` (one certificate names both),
created with the CLI while both servers run. The first thing ``c.test`` ever
sees is ``a.test`` fetching its descriptor and sending it a signed request:
it must answer as itself, with its own key and its own policy, never as the
default tenant ``b.test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import bearer, peer_row
from tests.harness import ServerProcess, TlsNet, free_port, running, wait_for


def two_servers_three_names(root: Path) -> tuple[TlsNet, ServerProcess, ServerProcess]:
    net = TlsNet(root / "tls")
    ports = {"a.test": free_port(), "b.test": free_port()}
    resolve = {**{n: f"127.0.0.1:{p}" for n, p in ports.items()},
               "c.test": f"127.0.0.1:{ports['b.test']}"}
    servers = []
    for name, also in (("a.test", ()), ("b.test", ("c.test",))):
        cert = net.ca.issue_cert(name, *also, "127.0.0.1")
        certfile, keyfile = net.root / f"{name}.crt", net.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        servers.append(ServerProcess(root / name, name, tls=(certfile, keyfile), port=ports[name],
                                     extra={"federation": {"ca_file": str(net.ca_file)},
                                            "federation.resolve": resolve}))
    return net, servers[0], servers[1]


OPEN = {"default_mode": "open"}


async def test_new_tenant_federates_at_once(tmp_path: Path) -> None:
    net, a, b = two_servers_three_names(tmp_path)
    with running(a, b):
        admin_a, alice = a.create_user("root", admin=True), a.create_user("alice")
        ctx = net.ssl_context()
        async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=20) as ca, \
                httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=20) as cb:
            r = await ca.put("/v1/admin/federation/policy", json=OPEN, headers=bearer(admin_a))
            assert r.status_code == 200
            b.cli("admin", "tenant", "create", "c.test")
            carol = b.create_user("carol", tenant="c.test")
            admin_c = b.create_user("root", admin=True, tenant="c.test")

            # c.test's first request ever: a.test fetches its descriptor, then asks
            # it (signed) for carol's profile. c.test answers with its own policy
            # (invite_only, nobody allowed yet), not as b.test.
            r = await ca.post("/v1/me/federated-dms", json={"fqid": "@carol:c.test"},
                              headers=bearer(alice))
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "SW_FED_PEER_UNKNOWN", r.text
            row = await peer_row(ca, admin_a, "c.test")
            assert row["key_id"] and row["protocol_versions"] == ["v1"]

            r = await cb.put("/v1/admin/federation/policy", json=OPEN,
                             headers={**bearer(admin_c), "Host": "c.test"})
            assert r.status_code == 200, r.text
            r = await ca.post("/v1/me/federated-dms", json={"fqid": "@carol:c.test"},
                              headers=bearer(alice))
            assert r.status_code == 201, r.text
            room_id = r.json()["room_id"]

            async def invited() -> Any:
                r = await cb.get("/v1/me/notifications",
                                 headers={**bearer(carol), "Host": "c.test"})
                return [n for n in r.json()["data"] if n.get("room_id") == room_id]

            await wait_for(invited, timeout=10, what="carol's invite on c.test")
        # nothing was refused at c.test or b.test for a wrong tenant or a missing key
        refusals = [e for e in b.logs() if e.get("event", "").startswith("federation.")
                    and e.get("reason") in ("SW_FED_SIGNATURE_MISMATCH", "SW_FED_NO_KEY")]
        assert refusals == []
        assert not any(e.get("reason") == "SW_FED_BAD_DESCRIPTOR"
                       for e in a.logs("federation.peer_discovery_failed"))
