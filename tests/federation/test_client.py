"""The outbound federation client against a real TLS listener on 127.0.0.1.

A tiny trio HTTPS server (trustme certificates) answers with what each test
needs: JSON, garbage, a huge body, nothing at all. Every failure must come
back as a FederationError with its stable code.
"""

from __future__ import annotations

import json
import ssl
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trustme

from swfed.config import FederationConfig
from swfed.core.errors import FederationError
from swfed.federation.client import FederationClient, split_server_name

Handler = Callable[[bytes], bytes | None]


def http_response(body: bytes, status: int = 200) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class TlsServer:
    def __init__(self, ca: trustme.CA, name: str, nursery: trio.Nursery) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(self.ctx)
        self.nursery = nursery
        self.handler: Handler = lambda req: http_response(b'{"ok": true}')
        self.requests: list[bytes] = []
        self.port = 0
        #: answer many requests per connection (the handler must not say close)
        self.keep_alive = False
        self.connections = 0

    async def start(self) -> None:
        listeners = await self.nursery.start(
            trio.serve_ssl_over_tcp, self._serve, 0, self.ctx)
        self.port = listeners[0].transport_listener.socket.getsockname()[1]

    async def _serve(self, stream: trio.SSLStream) -> None:
        self.connections += 1
        try:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += await stream.receive_some(65536)
                body, data = body[:length], body[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                answer = self.handler(head)
                if answer is None:
                    await trio.sleep_forever()
                await stream.send_all(answer)
                if not self.keep_alive:
                    await stream.aclose()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def peer(ca: trustme.CA, nursery: trio.Nursery) -> AsyncIterator[TlsServer]:
    server = TlsServer(ca, "peer.test", nursery)
    await server.start()
    yield server


def client_for(ca: trustme.CA | None, peer: TlsServer, tmp_path: Any,
               **over: Any) -> FederationClient:
    ca_file = None
    if ca is not None:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
    args: dict[str, Any] = dict(ca_file=ca_file, request_timeout_seconds=2.0,
                                resolve=types.MappingProxyType(
                                    {"peer.test": f"127.0.0.1:{peer.port}"}))
    args.update(over)
    return FederationClient(FederationConfig(**args))


async def code_of(coro: Any) -> str:
    with pytest.raises(FederationError) as info:
        await coro
    return info.value.code


async def test_json_roundtrip_sends_host_and_auth(ca: trustme.CA, peer: TlsServer,
                                                  tmp_path: Any) -> None:
    async with client_for(ca, peer, tmp_path) as client:
        resp = await client.post_json("peer.test", "/_scaiwave/x", {"b": 1, "a": "é"},
                                      auth=lambda m, u, b, raw: f"SW-Fed test {m} {u}")
    assert resp.status == 200 and resp.body == {"ok": True}
    sent = peer.requests[0]
    assert sent.startswith(b"POST /_scaiwave/x HTTP/1.1")
    assert b"\r\nhost: peer.test\r\n" in sent.lower()
    assert b"SW-Fed test POST /_scaiwave/x" in sent
    assert sent.endswith('{"a":"é","b":1}'.encode())  # canonical JSON on the wire


async def test_error_status_with_json_is_returned(ca: trustme.CA, peer: TlsServer,
                                                  tmp_path: Any) -> None:
    peer.handler = lambda req: http_response(
        json.dumps({"error": {"code": "SW_FED_POLICY_DENIED"}}).encode(), 403)
    async with client_for(ca, peer, tmp_path) as client:
        resp = await client.get_json("peer.test", "/x")
    assert resp.status == 403 and resp.body["error"]["code"] == "SW_FED_POLICY_DENIED"


async def test_unknown_ca_is_tls_failed(peer: TlsServer, tmp_path: Any) -> None:
    async with client_for(None, peer, tmp_path) as client:
        assert await code_of(client.get_json("peer.test", "/x")) == "SW_FED_TLS_FAILED"


async def test_certificate_for_another_name_is_tls_failed(ca: trustme.CA, peer: TlsServer,
                                                          tmp_path: Any) -> None:
    # the peer's certificate says peer.test; we ask for other.test at the same address
    client = client_for(ca, peer, tmp_path, resolve=types.MappingProxyType(
        {"other.test": f"127.0.0.1:{peer.port}"}))
    async with client:
        with pytest.raises(FederationError) as info:
            await client.get_json("other.test", "/x")
    assert info.value.code == "SW_FED_TLS_FAILED"
    assert "ca_file" in str(info.value)


def kept_alive(body: bytes) -> bytes:
    return (f"HTTP/1.1 200 X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_a_peer_s_connection_is_kept_and_used_again(ca: trustme.CA, peer: TlsServer,
                                                          tmp_path: Any) -> None:
    peer.keep_alive = True
    peer.handler = lambda req: kept_alive(b'{"ok": true}')
    async with client_for(ca, peer, tmp_path) as client:
        for _ in range(3):
            assert (await client.post_json("peer.test", "/x", {"a": 1})).body == {"ok": True}
    assert len(peer.requests) == 3 and peer.connections == 1


async def test_a_connection_serves_only_the_name_its_certificate_was_checked_for(
        ca: trustme.CA, peer: TlsServer, tmp_path: Any) -> None:
    """Two names at one address: a kept connection to peer.test (its certificate
    checked for peer.test) is never used for other.test, whose own handshake fails."""
    peer.keep_alive = True
    peer.handler = lambda req: kept_alive(b'{"ok": true}')
    client = client_for(ca, peer, tmp_path, resolve=types.MappingProxyType(
        {"peer.test": f"127.0.0.1:{peer.port}", "other.test": f"127.0.0.1:{peer.port}"}))
    async with client:
        assert (await client.get_json("peer.test", "/x")).body == {"ok": True}
        assert await code_of(client.get_json("other.test", "/x")) == "SW_FED_TLS_FAILED"
        assert (await client.get_json("peer.test", "/x")).body == {"ok": True}
    assert len(peer.requests) == 2 and peer.connections == 2


async def test_past_max_peers_kept_the_least_recently_used_peer_is_closed(
        ca: trustme.CA, peer: TlsServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from swfed.federation import client as client_module

    monkeypatch.setattr(client_module, "MAX_PEERS_KEPT", 2)
    names = ["peer.test", "two.test", "three.test"]
    ca.issue_cert(*names).configure_cert(peer.ctx)  # the listener's context: next handshakes
    peer.keep_alive = True
    peer.handler = lambda req: kept_alive(b'{"ok": true}')
    client = client_for(ca, peer, tmp_path, resolve=types.MappingProxyType(
        {name: f"127.0.0.1:{peer.port}" for name in names}))
    async with client:
        for name in names:
            assert (await client.get_json(name, "/x")).body == {"ok": True}
        assert list(client._pools) == ["two.test", "three.test"]
        assert (await client.get_json("two.test", "/x")).body == {"ok": True}
        assert (await client.get_json("peer.test", "/x")).body == {"ok": True}
        assert list(client._pools) == ["two.test", "peer.test"]
    # peer.test was forgotten once, so it connected twice; two.test once
    assert peer.connections == 4


async def test_verify_tls_off_accepts_any_certificate(peer: TlsServer, tmp_path: Any) -> None:
    async with client_for(None, peer, tmp_path, verify_tls=False) as client:
        assert (await client.get_json("peer.test", "/x")).body == {"ok": True}


async def test_bad_bodies(ca: trustme.CA, peer: TlsServer, tmp_path: Any) -> None:
    async with client_for(ca, peer, tmp_path, max_response_bytes=2048) as client:
        for body in [b"<html>", b"[1,2]", b"", b'"x"']:
            peer.handler = lambda req, body=body: http_response(body)
            assert await code_of(client.get_json("peer.test", "/x")) == "SW_FED_BAD_RESPONSE"
        peer.handler = lambda req: http_response(b'{"a":"' + b"x" * 5000 + b'"}')
        assert await code_of(client.get_json("peer.test", "/x")) == "SW_FED_RESPONSE_TOO_LARGE"


async def test_silent_peer_times_out(ca: trustme.CA, peer: TlsServer, tmp_path: Any) -> None:
    peer.handler = lambda req: None
    async with client_for(ca, peer, tmp_path, request_timeout_seconds=0.5) as client:
        assert await code_of(client.get_json("peer.test", "/x")) == "SW_FED_PEER_TIMEOUT"


async def test_closed_port_is_unreachable(ca: trustme.CA, tmp_path: Any) -> None:
    from tests.harness import free_port

    cfg = FederationConfig(resolve=types.MappingProxyType(
        {"down.test": f"127.0.0.1:{free_port()}"}))
    async with FederationClient(cfg) as client:
        assert await code_of(client.get_json("down.test", "/x")) == "SW_FED_PEER_UNREACHABLE"


async def test_private_addresses_refused_unless_allowed() -> None:
    async with FederationClient(FederationConfig()) as client:
        with pytest.raises(FederationError) as info:
            await client.get_json("localhost:1", "/x")
    assert info.value.code == "SW_FED_PRIVATE_ADDRESS"
    assert "allow_private_addresses" in str(info.value)
    async with FederationClient(FederationConfig(allow_private_addresses=True)) as client:
        assert await code_of(client.get_json("localhost:1", "/x")) == "SW_FED_PEER_UNREACHABLE"


def test_split_server_name() -> None:
    assert split_server_name("a.test") == ("a.test", 443)
    assert split_server_name("a.test:8448") == ("a.test", 8448)
    assert split_server_name("[::1]:8448") == ("::1", 8448)
    assert split_server_name("[::1]") == ("::1", 443)
