"""A scriptable hostile peer: a real TLS server that signs with its own key.

It listens on 127.0.0.1 with a certificate from the test CA for its name
(which the servers under test resolve to it), publishes a valid signed
descriptor, and answers every other request with what the test scripts:
``peer.answer(path_prefix, fn)`` where ``fn(method, path, body)`` returns
(or, if async, returns when it chooses) ``(status, body_bytes)`` — anything
at all, valid or not. It records what it was asked (``peer.requests``:
method, path with its query, body). It also *sends* as a server would:
``peer.request(target, method, path, body)`` signs a real ``SW-Fed``
request, and ``peer.event(...)`` makes an event signed with its key.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from swfed.core.canonical import encode_canonical_json
from swfed.core.descriptor import build_descriptor
from swfed.core.signing import KeyPair, generate_keypair, sign_json, sign_request
from tests.harness import ServerProcess, TlsNet, free_port

Answer = Callable[[str, str, Any], Any]  # (status, body) or an awaitable of it


def ok_send(method: str, path: str, body: Any) -> tuple[int, bytes]:
    """What an honest peer answers to /send: every event stored."""
    events = body.get("events", []) if isinstance(body, dict) else []
    ids = [e.get("event_id") for e in events if isinstance(e, dict)]
    return 200, json.dumps({"results": {i: {} for i in ids if isinstance(i, str)}}).encode()


class HostilePeer:
    def __init__(self, net: TlsNet, name: str, port: int | None = None,
                 keypair: KeyPair | None = None) -> None:
        self.net = net
        self.name = name
        self.port = port or free_port()
        self.keypair: KeyPair = keypair or generate_keypair()
        self.requests: list[tuple[str, str, Any]] = []
        self.answers: list[tuple[str, Answer]] = [("/_scaiwave/federation/v1/send", ok_send)]
        self.descriptor: Callable[[], bytes] = self.honest_descriptor
        #: > 0: every answer is sent one byte per this many seconds.
        self.drip_seconds = 0.0

    def honest_descriptor(self) -> bytes:
        return json.dumps(build_descriptor(self.name, self.keypair, [],
                                           int(time.time() * 1000))).encode()

    def answer(self, prefix: str, fn: Answer) -> None:
        """Answer requests whose path starts with ``prefix`` (newest rule first)."""
        self.answers.insert(0, (prefix, fn))

    def count(self, prefix: str) -> int:
        return sum(1 for _, path, _ in self.requests if path.startswith(prefix))

    # -- serving ---------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path = scope["path"]
        query = scope.get("query_string", b"").decode()
        self.requests.append((scope["method"], f"{path}?{query}" if query else path, body))
        status, out = 404, b'{"error": {"code": "SW_NOT_FOUND", "message": "no"}}'
        if path == "/.well-known/scaiwave/server":
            status, out = 200, self.descriptor()
        else:
            for prefix, fn in self.answers:
                if path.startswith(prefix):
                    answer = fn(scope["method"], path, body)
                    status, out = await answer if inspect.isawaitable(answer) else answer
                    break
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        if self.drip_seconds:  # a byte at a time, slowly: a peer that never quite answers
            for i in range(len(out)):
                await send({"type": "http.response.body", "body": out[i:i + 1],
                            "more_body": True})
                await trio.sleep(self.drip_seconds)
        await send({"type": "http.response.body", "body": out})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[HostilePeer]:
        cfg = HyperConfig()
        cfg.bind = [f"127.0.0.1:{self.port}"]
        certfile, keyfile = self.net.cert_for(self.name)
        cfg.certfile, cfg.keyfile = str(certfile), str(keyfile)
        cfg.accesslog = None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(
                self._app, cfg, shutdown_trigger=stop.wait, task_status=task_status))
            try:
                yield self
            finally:
                stop.set()

    # -- sending as a server ---------------------------------------------------

    def event(self, room_id: str, type_: str, content: dict[str, Any], *,
              sender: str | None = None, event_id: str | None = None) -> dict[str, Any]:
        """An event signed by this peer's key (whatever it claims)."""
        return sign_json({
            "event_id": event_id or str(uuid.uuid4()), "room_id": room_id, "type": type_,
            "sender": sender or f"@mallory:{self.name}", "origin": self.name,
            "origin_ts": int(time.time() * 1000), "content": content}, self.name, self.keypair)

    async def request(self, target: ServerProcess, method: str, path: str,
                      body: Any = None) -> httpx.Response:
        """A correctly signed federation request from this peer to ``target``."""
        headers = {"Host": target.name, "Authorization": sign_request(
            method=method, uri=path, origin=self.name, destination=target.name,
            ts_ms=int(time.time() * 1000), content=body, keypair=self.keypair)}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = encode_canonical_json(body)
        async with httpx.AsyncClient(verify=self.net.ssl_context(), timeout=30) as c:
            return await c.request(method, target.url + path, content=content, headers=headers)

    async def send(self, target: ServerProcess, events: list[Any]) -> httpx.Response:
        return await self.request(target, "POST", "/_scaiwave/federation/v1/send",
                                  {"origin": self.name, "txn_id": str(uuid.uuid4()),
                                   "events": events})
