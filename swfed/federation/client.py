"""The one place that makes server-to-server HTTP requests.

::

    PeerUnreachable (code, status)       every failure of a request to a peer
                                         (swfed.core.errors; always transient)
     ├─ SW_FED_PEER_UNREACHABLE  502     DNS failure, refused, reset
     ├─ SW_FED_PEER_TIMEOUT      504     no answer in request_timeout_seconds
     ├─ SW_FED_TLS_FAILED        502     certificate or handshake failure
     ├─ SW_FED_PRIVATE_ADDRESS   403     the peer resolves to a private address
     ├─ SW_FED_RESPONSE_TOO_LARGE 502    more than max_response_bytes
     └─ SW_FED_BAD_RESPONSE      502     not a JSON object

A peer ``name[:port]`` (default port 443) is reached at the address in
``[federation.resolve]`` if listed there, else at the first address DNS
gives, which must be globally routable (:func:`swfed.core.addresses.is_public`)
unless ``allow_private_addresses``. Each request has one deadline, from the
name lookup to the last byte. The
connection goes to that checked IP; the certificate is verified against the
peer's *name* (SNI and Host carry it). Environment proxies are never used.
Non-2xx answers with a JSON body are returned, not raised; :func:`error_of`
turns one into the peer's :class:`~swfed.core.errors.RemoteRefusal`.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import trio

from swfed.config import FederationConfig, parse_host_port
from swfed.core.addresses import is_public
from swfed.core.canonical import encode_canonical_json
from swfed.core.errors import PeerUnreachable, RemoteRefusal

#: auth(method, uri, content, content_bytes) -> the Authorization header
Auth = Callable[[str, str, Any, "bytes | None"], str]

#: Failures to reach a peer, as opposed to a peer's refusal.
TRANSPORT_CODES = frozenset({"SW_FED_PEER_UNREACHABLE", "SW_FED_PEER_TIMEOUT",
                             "SW_FED_TLS_FAILED", "SW_FED_PRIVATE_ADDRESS",
                             "SW_FED_RESPONSE_TOO_LARGE", "SW_FED_BAD_RESPONSE"})


@attrs.frozen
class FedResponse:
    status: int
    body: dict[str, Any]
    address: str
    #: Seconds the peer asked us to wait (``Retry-After`` on a 429 or 503).
    retry_after: float | None = None


def error_of(resp: FedResponse, peer: str) -> RemoteRefusal:
    """The error ``peer`` answered with, as a :class:`RemoteRefusal` (code and message kept).

    The one place where a peer's refusal becomes an error here.
    """
    err = resp.body.get("error") if isinstance(resp.body, dict) else None
    status = 502 if resp.status >= 500 else resp.status
    if isinstance(err, dict) and isinstance(err.get("code"), str) and err["code"]:
        code = err["code"][:64]
        message = str(err.get("message", ""))[:500]
        return RemoteRefusal(peer, code, f"{peer} answered {resp.status} {code}: {message}",
                             status=status)
    return RemoteRefusal(peer, "SW_FED_BAD_RESPONSE",
                         f"{peer} answered {resp.status} without an error body", status=502)


def split_server_name(server_name: str) -> tuple[str, int]:
    """(host without brackets, port); port 443 when the name has none."""
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 443
    host, sep, port = server_name.partition(":")
    return host, int(port) if sep else 443


#: Requests in flight to all peers together; more wait for a slot (within
#: their deadline).
MAX_IN_FLIGHT = 100
#: Idle connections kept open per peer: its queue's one /send in flight, and
#: the odd key fetch or history page beside it.
KEEPALIVE_PER_PEER = 2
#: Peers whose connections are kept; past this, the least recently used peer
#: with nothing in flight has its connections closed.
MAX_PEERS_KEPT = 128


@attrs.define
class _PeerPool:
    transport: httpx.AsyncHTTPTransport
    in_flight: int = 0


class FederationClient:
    """Requests to peers, each peer over its own small connection pool.

    One pool per peer name, not one for all: a connection is only ever
    reused for the name its TLS certificate was checked against (names that
    resolve to one address share nothing), and each request looks through a
    peer's one or two connections instead of every peer's (httpcore's pool
    does work per connection it holds on every request: a host sending to
    fifty peers spent more there than on TLS). Requests go to the transport
    directly: httpx's client layer (cookies, redirects, auth flows, merged
    defaults) does nothing for us and cost a quarter of each request.
    """

    def __init__(self, cfg: FederationConfig) -> None:
        self.cfg = cfg
        verify: ssl.SSLContext | bool = False
        if cfg.verify_tls:
            verify = ssl.create_default_context()
            if cfg.ca_file is not None:
                verify.load_verify_locations(cafile=str(cfg.ca_file))
        self._verify = verify
        self._pools: OrderedDict[str, _PeerPool] = OrderedDict()
        self._slots = trio.CapacityLimiter(MAX_IN_FLIGHT)
        seconds = cfg.request_timeout_seconds
        self._timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}

    def _new_transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            verify=self._verify, trust_env=False, proxy=self.cfg.proxy or None,
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT,
                                max_keepalive_connections=KEEPALIVE_PER_PEER))

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            pools, self._pools = list(self._pools.values()), OrderedDict()
            for pool in pools:
                await pool.transport.aclose()

    def _pool(self, server_name: str) -> _PeerPool:
        """The peer's pool, counted in flight (the caller counts it out)."""
        pool = self._pools.get(server_name)
        if pool is None:
            pool = self._pools[server_name] = _PeerPool(self._new_transport())
        else:
            self._pools.move_to_end(server_name)
        pool.in_flight += 1
        return pool

    async def _forget_idle_peers(self) -> None:
        """Close the least recently used peers' connections past MAX_PEERS_KEPT."""
        while len(self._pools) > MAX_PEERS_KEPT:
            name = next((n for n, p in self._pools.items() if not p.in_flight), None)
            if name is None:
                return
            pool = self._pools.pop(name)
            with trio.CancelScope(shield=True):
                await pool.transport.aclose()

    async def _address(self, server_name: str) -> tuple[str, int, str]:
        """(ip, port, sni host) to connect to; raises PeerUnreachable."""
        host, port = split_server_name(server_name)
        mapped = self.cfg.resolve.get(server_name) or self.cfg.resolve.get(host)
        if mapped:
            ip, mport = parse_host_port(mapped)
            return ip, mport, host
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise PeerUnreachable(f"cannot resolve {host}: {exc}; check DNS or add the peer "
                                  "to [federation.resolve]", code="SW_FED_PEER_UNREACHABLE",
                                  status=502) from exc
        for info in infos:
            ip = str(info[4][0])
            if self.cfg.allow_private_addresses or is_public(ipaddress.ip_address(ip)):
                return ip, port, host
        raise PeerUnreachable(
            f"{server_name} resolves only to private addresses "
            f"({', '.join(sorted({str(i[4][0]) for i in infos}))}): set "
            "allow_private_addresses = true or add it to [federation.resolve]",
            code="SW_FED_PRIVATE_ADDRESS", status=403)

    async def request(self, method: str, server_name: str, uri: str,
                      body: dict[str, Any] | None = None, *,
                      auth: Auth | None = None, raw: bytes | None = None) -> FedResponse:
        """One request, name lookup to last byte within ``request_timeout_seconds``.

        ``raw``: the body already as canonical JSON (instead of ``body``).

        httpx's timeouts are per read, so a peer dripping a byte at a time
        would otherwise hold us for ever. Raises PeerUnreachable (see above).
        """
        try:
            with trio.fail_after(self.cfg.request_timeout_seconds):
                return await self._request(method, server_name, uri, body, auth, raw)
        except trio.TooSlowError:
            raise PeerUnreachable(f"{server_name} did not answer in "
                                  f"{self.cfg.request_timeout_seconds} s",
                                  code="SW_FED_PEER_TIMEOUT", status=504) from None

    async def _request(self, method: str, server_name: str, uri: str,
                       body: dict[str, Any] | None, auth: Auth | None,
                       raw: bytes | None = None) -> FedResponse:
        ip, port, sni = await self._address(server_name)
        shown = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        headers = {"Host": server_name, "Accept": "application/json"}
        content = raw
        if content is None and body is not None:
            content = encode_canonical_json(body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        if auth is not None:
            headers["Authorization"] = auth(method, uri, body, content)
        url = f"https://{shown}{uri}"
        limit = self.cfg.max_response_bytes
        status, retry_after, data = await self._exchange(method, url, content, headers, sni,
                                                         server_name, shown, limit)
        try:
            parsed = json.loads(bytes(data))
        except (ValueError, RecursionError):  # junk, or nested past Python's stack
            parsed = None
        if not isinstance(parsed, dict):
            raise PeerUnreachable(f"{server_name} ({shown}) answered {status} with a body that "
                                  "is not a JSON object", code="SW_FED_BAD_RESPONSE", status=502)
        return FedResponse(status, parsed, shown, retry_after)

    async def _exchange(self, method: str, url: str, content: bytes | None,
                        headers: dict[str, str], sni: str, server_name: str, shown: str,
                        limit: int) -> tuple[int, float | None, bytearray]:
        # no redirects followed, no cookies kept, no environment read: the transport
        # alone does what we need (the deadline is request()'s, these are per step)
        request = httpx.Request(method, url, content=content, headers=headers,
                                extensions={"sni_hostname": sni, "timeout": self._timeouts})
        pool = self._pool(server_name)
        try:
            await self._forget_idle_peers()
            async with self._slots:
                resp = await pool.transport.handle_async_request(request)
                try:
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > limit:
                            raise PeerUnreachable(
                                f"{server_name} ({shown}) sent more than {limit} bytes "
                                "(max_response_bytes)", code="SW_FED_RESPONSE_TOO_LARGE",
                                status=502)
                finally:
                    await resp.aclose()
                status = resp.status_code
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except httpx.TimeoutException as exc:
            raise PeerUnreachable(f"{server_name} ({shown}) did not answer in "
                                  f"{self.cfg.request_timeout_seconds} s",
                                  code="SW_FED_PEER_TIMEOUT", status=504) from exc
        except httpx.ConnectError as exc:
            if _is_tls(exc):
                raise PeerUnreachable(
                    f"TLS with {server_name} ({shown}) failed: {_root(exc)}; check the peer's "
                    "certificate chain, or [federation] ca_file for a private CA",
                    code="SW_FED_TLS_FAILED", status=502) from exc
            raise PeerUnreachable(f"cannot connect to {server_name} ({shown}): {_root(exc)}",
                                  code="SW_FED_PEER_UNREACHABLE", status=502) from exc
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"request to {server_name} ({shown}) failed: {_root(exc)}",
                                  code="SW_FED_PEER_UNREACHABLE", status=502) from exc
        finally:
            pool.in_flight -= 1
        return status, retry_after, data

    async def fetch_bytes(self, server_name: str, uri: str, *, auth: Auth | None,
                          max_bytes: int, timeout: float,
                          sink: Callable[[bytes], Awaitable[None]]) -> FedResponse:
        """A GET whose 200 answer is binary: its body goes to ``sink``, chunk by chunk.

        Beside :meth:`request` for what is not JSON (a file): the same address
        rules, connection pools and slots, one deadline (``timeout``) from the
        name lookup to the last byte, and at most ``max_bytes`` taken (past it,
        SW_FED_RESPONSE_TOO_LARGE). A non-200 answer is read as JSON like any
        other (``body``); a 200 answer's ``body`` is ``{}``. Raises PeerUnreachable.
        """
        try:
            with trio.fail_after(timeout):
                return await self._fetch_bytes(server_name, uri, auth, max_bytes, sink)
        except trio.TooSlowError:
            raise PeerUnreachable(f"{server_name} did not send the file in {timeout} s",
                                  code="SW_FED_PEER_TIMEOUT", status=504) from None

    async def _fetch_bytes(self, server_name: str, uri: str, auth: Auth | None,
                           max_bytes: int, sink: Callable[[bytes], Awaitable[None]]
                           ) -> FedResponse:
        ip, port, sni = await self._address(server_name)
        shown = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        headers = {"Host": server_name, "Accept": "*/*"}
        if auth is not None:
            headers["Authorization"] = auth("GET", uri, None, None)
        request = httpx.Request("GET", f"https://{shown}{uri}", headers=headers,
                                extensions={"sni_hostname": sni, "timeout": self._timeouts})
        pool = self._pool(server_name)
        try:
            await self._forget_idle_peers()
            async with self._slots:
                resp = await pool.transport.handle_async_request(request)
                try:
                    status = resp.status_code
                    taken = 0
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        taken += len(chunk)
                        limit = max_bytes if status == 200 else self.cfg.max_response_bytes
                        if taken > limit:
                            raise PeerUnreachable(
                                f"{server_name} ({shown}) sent more than {limit} bytes",
                                code="SW_FED_RESPONSE_TOO_LARGE", status=502)
                        if status == 200:
                            await sink(chunk)
                        else:
                            data += chunk
                finally:
                    await resp.aclose()
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except httpx.TimeoutException as exc:
            raise PeerUnreachable(f"{server_name} ({shown}) stalled while sending a file",
                                  code="SW_FED_PEER_TIMEOUT", status=504) from exc
        except httpx.ConnectError as exc:
            code = "SW_FED_TLS_FAILED" if _is_tls(exc) else "SW_FED_PEER_UNREACHABLE"
            raise PeerUnreachable(f"cannot connect to {server_name} ({shown}): {_root(exc)}",
                                  code=code, status=502) from exc
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"request to {server_name} ({shown}) failed: {_root(exc)}",
                                  code="SW_FED_PEER_UNREACHABLE", status=502) from exc
        finally:
            pool.in_flight -= 1
        if status == 200:
            return FedResponse(status, {}, shown, retry_after)
        try:
            parsed = json.loads(bytes(data))
        except (ValueError, RecursionError):
            parsed = None
        return FedResponse(status, parsed if isinstance(parsed, dict) else {}, shown,
                           retry_after)

    async def get_json(self, server_name: str, path: str, *,
                       auth: Auth | None = None) -> FedResponse:
        return await self.request("GET", server_name, path, auth=auth)

    async def post_json(self, server_name: str, path: str, body: dict[str, Any] | None, *,
                        auth: Auth | None = None, raw: bytes | None = None) -> FedResponse:
        return await self.request("POST", server_name, path, body, auth=auth, raw=raw)


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not used by peers), at most 1 h."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds < float("inf"):
        return None
    return min(seconds, 3600.0)


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in type(seen).__name__ or "CERTIFICATE" in str(
                seen).upper():
            return True
        seen = seen.__cause__ or seen.__context__
    return False
