"""The spec's tutorial, steps 1-6, walked with curl as an admin would, host names changed.

Two real TLS servers (a.test, b.test); curl resolves them to 127.0.0.1 and
trusts the test CA. The one thing a script does that a person would not:
it sends messages the instant the accept returns (both ways). They must
arrive: the accept answers only once the host has ordered the join.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[TlsNet, ServerProcess, ServerProcess]]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("tutorial"), ["a.test", "b.test"])
    with running(a, b):
        yield net, a, b


def curl(net: TlsNet, server: ServerProcess, method: str, path: str, token: str | None = None,
         body: dict[str, Any] | None = None) -> Any:
    """``curl https://NAME/PATH`` as in the tutorial; returns the JSON answer."""
    args = ["curl", "-sS", "--fail-with-body", "--cacert", str(net.ca_file),
            "--resolve", f"{server.name}:{server.port}:127.0.0.1", "-X", method,
            f"https://{server.name}:{server.port}{path}"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout)


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def test_tutorial_steps_1_to_6_with_curl(
        servers: tuple[TlsNet, ServerProcess, ServerProcess]) -> None:
    net, a, b = servers
    admin_a, you = a.create_user("root", admin=True), a.create_user("you")
    admin_b, alice = b.create_user("root", admin=True), b.create_user("alice")

    # 1. verify your descriptor; 2. check the peer's
    for server in (a, b):
        desc = await wait_for(lambda s=server: _descriptor_with_key(net, s),  # type: ignore[misc]
                              what=f"{server.name}'s key")
        assert desc["server_name"] == server.name and desc["protocol_versions"] == ["v1"]
        assert desc["endpoints"]["send"] == "/_scaiwave/federation/v1/send"

    # 3. update your federation policy; 4. the peer reciprocates
    for server, admin, peer in ((a, admin_a, "b.test"), (b, admin_b, "a.test")):
        policy = await run(curl, net, server, "PUT", "/v1/admin/federation/policy", admin, {
            "default_mode": "invite_only", "allowed_peers": [peer],
            "max_foreign_participants_per_room": 50})
        assert policy["allowed_peers"] == [peer]

    # 5. a federated DM; the invite shows in alice's notifications; she accepts
    dm = await run(curl, net, a, "POST", "/v1/me/federated-dms", you,
                   {"fqid": "@alice:b.test"})
    room_id = dm["room_id"]

    async def invite() -> str | None:
        notes = await run(curl, net, b, "GET", "/v1/me/notifications", alice)
        return next((n["invite_id"] for n in notes["data"]
                     if n["type"] == "invite" and n["room_id"] == room_id), None)

    invite_id = await wait_for(invite, what="the invite in alice's notifications")
    await run(curl, net, b, "POST", f"/v1/me/invites/{invite_id}/accept", alice)
    # the instant the accept returns: both sides send
    await run(curl, net, a, "POST", f"/v1/rooms/{room_id}/messages", you, {"body": "hi alice"})
    await run(curl, net, b, "POST", f"/v1/rooms/{room_id}/messages", alice, {"body": "hi you"})

    async def both_see_both() -> bool:
        for server, token in ((a, you), (b, alice)):
            page = await run(curl, net, server, "GET", f"/v1/rooms/{room_id}/messages", token)
            bodies = {e["content"].get("body") for e in page["data"] if e["status"] == "sent"}
            if not {"hi alice", "hi you"} <= bodies:
                return False
        return True

    await wait_for(both_see_both, what="both messages on both servers")

    # 6. backfill: the member server pulls the host's history, verified
    pulled = await run(curl, net, b, "POST", f"/v1/admin/rooms/{room_id}/federation/backfill",
                       admin_b)
    assert pulled["refused"] == 0 and pulled["pulled"] >= 3


def _descriptor_with_key(net: TlsNet, server: ServerProcess) -> dict[str, Any] | None:
    desc = curl(net, server, "GET", "/.well-known/scaiwave/server")
    return desc if desc.get("public_key", "").startswith("ed25519:") else None
