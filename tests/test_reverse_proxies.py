"""swfed behind Debian's nginx and caddy, run for real from contrib/.

Each proxy runs as a subprocess with a config made from the contrib file:
the same directives, with only ports, paths and certificates substituted
(:func:`nginx_site`, :func:`caddy_site`). TLS ends at the proxy; swfed
listens on 127.0.0.1 over plain HTTP and trusts the proxy's X-Forwarded-For
(``[server] trusted_proxies``). Server names carry the proxy's port, so a
proxy that dropped the port from ``Host`` would route to no tenant.

Two servers, each behind its own proxy, federate (signed requests survive
the proxy: no path rewrite, Host kept); an event reaches an SSE stream
through the proxy while it stays open (no buffering); a body of exactly
``max_request_bytes`` reaches swfed; a forged X-Forwarded-For from the
client does not become its address.

The binaries come from Debian (``apt-get install nginx caddy``; .ci/run
installs them); where one is missing the tests for it skip, saying so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, free_port, wait_for
from tests.test_stream import sse

REPO = Path(__file__).parent.parent
MAX_REQUEST_BYTES = 1_048_576  # the default, which both contrib files match
CLIENT = "127.0.0.9"  # our test clients connect from here, not from the proxies' 127.0.0.1


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def substitute(text: str, pairs: list[tuple[str, str]]) -> str:
    """Each ``old`` must occur: the contrib file is what gets tested."""
    for old, new in pairs:
        assert old in text, f"{old!r} is no longer in the contrib file"
        text = text.replace(old, new)
    return text


def nginx_site(name: str, port: int, backend: int, cert: tuple[Path, Path]) -> str:
    host = name.split(":")[0]
    v6 = f"listen [::1]:{port} ssl http2;" if _ipv6() else ""
    return substitute((REPO / "contrib/nginx/swfed.conf").read_text(), [
        ("listen [::]:443 ssl http2;", v6),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
        ("server 127.0.0.1:8448;", f"server 127.0.0.1:{backend};"),
        ("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert[0])),
        ("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(cert[1])),
        ("server_name chat.example.com;", f"server_name {host};"),
    ])


def caddy_site(name: str, port: int, backend: int, cert: tuple[Path, Path]) -> str:
    # The contrib file lets Caddy fetch a certificate; here it is given ours.
    return substitute((REPO / "contrib/caddy/Caddyfile").read_text(), [
        ("chat.example.com {", f"https://{name.split(':')[0]}:{port} {{\n"
                               f"\ttls {cert[0]} {cert[1]}"),
        ("reverse_proxy 127.0.0.1:8448 {", f"reverse_proxy 127.0.0.1:{backend} {{"),
    ])


class Proxy:
    """One nginx or caddy process in front of one swfed."""

    def __init__(self, kind: str, root: Path, name: str, port: int, backend: int,
                 cert: tuple[Path, Path]) -> None:
        self.kind, self.root, self.port = kind, root, port
        root.mkdir(parents=True, exist_ok=True)
        if kind == "nginx":
            site = root / "swfed.conf"
            site.write_text(nginx_site(name, port, backend, cert))
            temps = "\n".join(f"  {what}_temp_path {root / what};"
                              for what in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            user = "user root;\n" if os.geteuid() == 0 else ""
            (root / "nginx.conf").write_text(
                f"{user}daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\n"
                f"error_log {root / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
                f"http {{\n  access_log off;\n{temps}\n  include {site};\n}}\n")
            self.argv = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf"),
                         "-e", str(root / "error.log")]
            self.env = dict(os.environ)
        else:
            (root / "Caddyfile").write_text(
                "{\n\tadmin off\n\tauto_https disable_redirects\n"
                f"\tstorage file_system {root / 'storage'}\n}}\n\n"
                + caddy_site(name, port, backend, cert))
            self.argv = ["caddy", "run", "--adapter", "caddyfile",
                         "--config", str(root / "Caddyfile")]
            self.env = {**os.environ, "HOME": str(root), "XDG_DATA_HOME": str(root / "data"),
                        "XDG_CONFIG_HOME": str(root / "config")}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        log = (self.root / "stdout.log").open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)  # polling a port that is not open yet
        self.kill()
        raise RuntimeError(f"{self.kind} did not start:\n{self.output()}")

    def output(self) -> str:
        text = (self.root / "stdout.log").read_text(errors="replace")
        err = self.root / "error.log"
        return text + (err.read_text(errors="replace") if err.exists() else "")

    def kill(self) -> None:
        # SIGTERM, not SIGKILL: nginx's master then takes its workers down with it.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Site:
    """A swfed server and the proxy in front of it; ``url`` is the proxy's."""

    def __init__(self, server: ServerProcess, proxy: Proxy) -> None:
        self.server, self.proxy = server, proxy
        self.name = server.name
        self.url = f"https://127.0.0.1:{proxy.port}"


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def sites(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[TlsNet, Site, Site]]:
    kind = request.param
    if shutil.which(kind) is None:
        pytest.skip(f"{kind} is not installed (apt-get install {kind}); CI installs it "
                    "in .ci/run")
    root = tmp_path_factory.mktemp(kind)
    net = TlsNet(root / "tls")
    proxy_ports = {"a": free_port(), "b": free_port()}
    names = {k: f"{k}.test:{port}" for k, port in proxy_ports.items()}
    resolve = {names[k]: f"127.0.0.1:{port}" for k, port in proxy_ports.items()}
    made = []
    try:
        for k in ("a", "b"):
            server = ServerProcess(root / k, names[k], extra={
                "server": {"trusted_proxies": ["127.0.0.1", "::1"]},
                "federation": {"ca_file": str(net.ca_file), "generate_key_on_start": True},
                "federation.resolve": resolve,
            })
            proxy = Proxy(kind, root / f"{kind}-{k}", names[k], proxy_ports[k], server.port,
                          net.cert_for(names[k]))
            made.append((server, proxy))
            server.start()
            proxy.start()
        yield net, Site(*made[0]), Site(*made[1])
    finally:
        for server, proxy in made:
            proxy.kill()
            server.kill()


@contextlib.asynccontextmanager
async def client(net: TlsNet, site: Site) -> Any:
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT, verify=net.ssl_context())
    async with httpx.AsyncClient(base_url=site.url, transport=transport, timeout=30,
                                 headers={"Host": site.name}) as c:
        yield c


async def ok(c: httpx.AsyncClient, token: str, method: str, path: str,
             body: Any = None) -> dict[str, Any]:
    r = await c.request(method, path, json=body, headers=bearer(token))
    assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
    return dict(r.json())


async def test_two_servers_federate_through_their_proxies(
        sites: tuple[TlsNet, Site, Site]) -> None:
    net, a, b = sites
    async with client(net, a) as ca, client(net, b) as cb:
        for site, c in ((a, ca), (b, cb)):
            root = site.server.create_user("root", admin=True)
            await ok(c, root, "PUT", "/v1/admin/federation/policy", {"default_mode": "open"})
        alice, bob = a.server.create_user("alice"), b.server.create_user("bob")
        room = (await ok(ca, alice, "POST", "/v1/rooms", {"name": "via proxies",
                                                         "federate": True}))["room_id"]
        await ok(ca, alice, "POST", f"/v1/rooms/{room}/invites",
                 {"fqid": f"@bob:{b.name}"})

        async def invite() -> str | None:
            notes = (await ok(cb, bob, "GET", "/v1/me/notifications?limit=200"))["data"]
            return next((n["invite_id"] for n in notes
                         if n["type"] == "invite" and n["room_id"] == room), None)

        invite_id = await wait_for(invite, what="alice's invite at bob's server")
        await ok(cb, bob, "POST", f"/v1/me/invites/{invite_id}/accept")
        await ok(ca, alice, "POST", f"/v1/rooms/{room}/messages", {"body": "hello via proxy"})
        await ok(cb, bob, "POST", f"/v1/rooms/{room}/messages", {"body": "and back"})

        async def bodies(c: httpx.AsyncClient, token: str) -> set[str]:
            page = await c.get(f"/v1/rooms/{room}/messages?limit=50", headers=bearer(token))
            if page.status_code != 200:
                return set()
            return {e["content"].get("body") for e in page.json()["data"]
                    if e["type"] == "message" and e["status"] == "sent"}

        want = {"hello via proxy", "and back"}
        await wait_for(lambda: _has(bodies(cb, bob), want), what="both messages at b")
        await wait_for(lambda: _has(bodies(ca, alice), want), what="both messages at a")
    for site in (a, b):
        assert not site.server.logs("federation.signature_verify_failed")


async def _has(got: Any, want: set[str]) -> bool:
    return want <= await got


async def test_an_event_reaches_a_stream_through_the_proxy_at_once(
        sites: tuple[TlsNet, Site, Site]) -> None:
    net, a, _ = sites
    ann, ben = a.server.create_user("ann"), a.server.create_user("ben")
    async with client(net, a) as c:
        room = (await ok(c, ann, "POST", "/v1/rooms", {"name": "live"}))["room_id"]
        invite_id = (await ok(c, ann, "POST", f"/v1/rooms/{room}/invites",
                              {"fqid": "@ben"}))["invite_id"]
        await ok(c, ben, "POST", f"/v1/me/invites/{invite_id}/accept")
        async with c.stream("GET", "/v1/me/stream", headers=bearer(ben)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            items = sse(resp)
            for n in range(3):
                posted = await ok(c, ann, "POST", f"/v1/rooms/{room}/messages",
                                  {"body": f"live {n}"})
                sent = trio.current_time()
                with trio.fail_after(1.0):  # buffered, it would come at the end or never
                    async for item in items:
                        if (item["event"] == "event"
                                and item["data"]["event_id"] == posted["event_id"]):
                            break
                print(f"{a.proxy.kind}: event {n} after {trio.current_time() - sent:.3f} s")


async def test_a_body_of_max_request_bytes_reaches_swfed(
        sites: tuple[TlsNet, Site, Site]) -> None:
    net, a, _ = sites
    ann = a.server.create_user("big")
    async with client(net, a) as c:
        room = (await ok(c, ann, "POST", "/v1/rooms", {"name": "big"}))["room_id"]
        head, tail = b'{"body": "', b'"}'
        body = head + b"x" * (MAX_REQUEST_BYTES - len(head) - len(tail)) + tail
        assert len(body) == MAX_REQUEST_BYTES
        r = await c.post(f"/v1/rooms/{room}/messages", content=body,
                         headers={**bearer(ann), "Content-Type": "application/json"})
        # swfed read it all and judged the message itself (too long for a message),
        # rather than the proxy refusing the body
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] != "SW_HTTP_413"
        # One byte more is refused: 413, or (Caddy, when its body limit or swfed's 413
        # wins the race with the body it is still sending upstream) a connection cut
        # mid-answer or Caddy's own 502 (seen once in CI); never stored.
        try:
            r = await c.post(f"/v1/rooms/{room}/messages", content=body + b" ",
                             headers={**bearer(ann), "Content-Type": "application/json"})
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
            assert a.proxy.kind == "caddy"
        else:
            assert r.status_code == 413 or (a.proxy.kind == "caddy" and r.status_code == 502)


async def test_the_client_address_is_the_one_the_proxy_saw(
        sites: tuple[TlsNet, Site, Site]) -> None:
    net, a, _ = sites
    async with client(net, a) as c:
        r = await c.post("/v1/login", json={"local_id": "nobody", "password": "wrong"},
                         headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401, r.text

    def seen() -> list[str]:
        return [x["address"] for x in a.server.logs("login.failed")
                if x.get("local_id") == "nobody"]

    await wait_for(seen, what="the failed login's log line")
    assert seen() == [CLIENT]  # not the proxy's 127.0.0.1, not the forged address


def test_configs_match_max_request_bytes() -> None:
    from swfed.config import ServerConfig

    assert ServerConfig(name="x").max_request_bytes == MAX_REQUEST_BYTES
    assert re.search(r"client_max_body_size 1m;",
                     (REPO / "contrib/nginx/swfed.conf").read_text())
    assert re.search(r"max_size 1MiB", (REPO / "contrib/caddy/Caddyfile").read_text())
