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
import re
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


class HostedRoom:
    """A room ``peer`` hosts exactly as the protocol says, for hostile-host tests.

    It numbers its events (``unsigned.seq``, contiguous from 1), answers a
    member server's ``…/membership`` (orders the member's own signed event and
    answers the room's state: ``seq``, ``last_seq``, ``members``, ``events``),
    ``…/backfill?after=`` (oldest first, with ``last_seq``) and ``?before=``
    (newest first), and ``…/members``. :meth:`deliver` relays what a target
    has not had yet through ``/send``. A test lies by editing ``events``,
    ``members`` or ``answer_overrides`` (path suffix -> Answer), or by
    answering a path itself before these rules (``peer.answer``).
    """

    def __init__(self, peer: HostilePeer, name: str, *, local: str = "mallory") -> None:
        self.peer = peer
        self.room_id = f"!{(re.sub('[^A-Za-z0-9]', '', name) + 'room0000')[:32]}:{peer.name}"
        self.name = name
        self.events: list[dict[str, Any]] = []  # each with unsigned.seq, in order
        #: fqid -> membership ("join" | "invite" | "leave" | "decline")
        self.members: dict[str, str] = {}
        self.answer_overrides: dict[str, Answer] = {}
        self.delivered: dict[str, int] = {}  # target name -> highest seq sent
        self.local = f"@{local}:{peer.name}"
        prefix = f"/_scaiwave/federation/v1/rooms/{self.room_id}"
        peer.answer(prefix, self._serve)
        self.add(peer.event(self.room_id, "member", {"membership": "join",
                                                      "display_name": local},
                            sender=self.local))

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def add(self, event: dict[str, Any]) -> dict[str, Any]:
        """Order ``event`` (signed by whoever): it gets the next seq; returns it as relayed."""
        ordered = {**event, "unsigned": {"seq": self.last_seq + 1}}
        self.events.append(ordered)
        if event["type"] == "member":
            self.members[event["sender"]] = event["content"]["membership"]
        elif event["type"] == "invite":
            self.members[event["content"]["invitee"]] = "invite"
        return ordered

    def post(self, body: str, *, sender: str | None = None, **content: Any) -> dict[str, Any]:
        return self.add(self.peer.event(self.room_id, "message", {"body": body, **content},
                                        sender=sender or self.local))

    def invite(self, invitee: str, *, invite_id: str | None = None) -> dict[str, Any]:
        """An invite of ``invitee`` by the room's creator, ordered."""
        content = {"invitee": invitee, "invite_id": invite_id or str(uuid.uuid4()),
                   "room_name": self.name, "room_type": "standard",
                   "members": sorted(m for m, s in self.members.items() if s == "join")}
        ordered = self.add(self.peer.event(self.room_id, "invite", content, sender=self.local))
        # a server new to the room gets the room from its invite on, as from a real host
        self.delivered.setdefault(invitee.split(":", 1)[1], self.last_seq - 1)
        return ordered

    async def deliver(self, target: ServerProcess,
                      events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Relay ``events`` (default: all ``target`` has not had) by /send; its results."""
        start = self.delivered.get(target.name, 0)
        batch = self.events[start:] if events is None else events
        if not batch:
            return {}
        r = await self.peer.send(target, batch)
        assert r.status_code == 200, r.text
        if events is None:
            self.delivered[target.name] = self.last_seq
        return dict(r.json()["results"])

    def member_list(self) -> list[dict[str, Any]]:
        return [{"fqid": m, "membership": s, "display_name": m.split(":")[0][1:]}
                for m, s in self.members.items() if s in ("join", "invite")]

    def _serve(self, method: str, path: str, body: Any) -> Any:
        suffix = path.split(self.room_id, 1)[1]
        for prefix, fn in self.answer_overrides.items():
            if suffix.startswith(prefix):
                return fn(method, path, body)
        if suffix == "/membership" and method == "POST":
            event = body.get("event") if isinstance(body, dict) else None
            if not isinstance(event, dict):
                return 400, b'{"error": {"code": "SW_FED_BAD_REQUEST", "message": "no"}}'
            ordered = self.add(event)
            return 200, json.dumps({
                "seq": ordered["unsigned"]["seq"], "last_seq": self.last_seq,
                "members": self.member_list(), "events": self.events[-50:][::-1]}).encode()
        if suffix == "/members":
            return 200, json.dumps({"room_id": self.room_id, "members": [
                m["fqid"] for m in self.member_list()]}).encode()
        if suffix == "/backfill":
            return self._backfill()
        return 404, b'{"error": {"code": "SW_NOT_FOUND", "message": "no"}}'

    def _backfill(self) -> tuple[int, bytes]:
        # the query string of the request being answered is the newest recorded
        query = self.peer.requests[-1][1].partition("?")[2]
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        limit = int(args.get("limit", 100))
        if "after" in args:
            after = int(args["after"])
            page = self.events[after:after + limit]
            return 200, json.dumps({"room_id": self.room_id, "events": page,
                                    "last_seq": self.last_seq}).encode()
        before = int(args.get("before", self.last_seq + 1))
        page = self.events[max(0, before - 1 - limit):before - 1][::-1]
        out: dict[str, Any] = {"room_id": self.room_id, "events": page}
        if page and page[-1]["unsigned"]["seq"] > 1:
            out["next"] = page[-1]["unsigned"]["seq"]
        return 200, json.dumps(out).encode()


# -- issue 18, rooms (tests/test_trust_rooms.py) ------------------------------------
# Added by the k-members branch; other additions go in their own section.


def uninvite(room: HostedRoom, invitee: str, invite_id: str,
             reason: str = "cancelled") -> dict[str, Any]:
    """``room``'s host ends an invite (an ``uninvite``, ordered): whichever id it names."""
    return room.add(room.peer.event(room.room_id, "uninvite", {
        "invitee": invitee, "invite_id": invite_id, "reason": reason}, sender=room.local))


async def ask_membership(peer: HostilePeer, target: ServerProcess, room_id: str,
                         membership: str, *, local: str = "mallory",
                         invite_id: str | None = None) -> httpx.Response:
    """``peer``'s user ``local`` joins, leaves or declines ``target``'s room through
    ``…/membership``, as a member server does; the host's answer."""
    content: dict[str, Any] = {"membership": membership}
    if invite_id is not None:
        content["invite_id"] = invite_id
    if membership == "join":
        content["display_name"] = local
    event = peer.event(room_id, "member", content, sender=f"@{local}:{peer.name}")
    return await peer.request(target, "POST",
                              f"/_scaiwave/federation/v1/rooms/{room_id}/membership",
                              {"event": event})
