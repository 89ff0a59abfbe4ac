"""Three federating tenants on two real processes, and what a user does with them.

``a.test`` and ``c.test`` are two tenants of one swfed process; ``b.test``
is another process. All three speak TLS from one test CA and resolve each
other through ``[federation.resolve]`` (c.test resolves to a.test's
port), so two tenants of one process federate exactly as two servers do.
Every tenant's policy is ``open``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running, wait_for

NAMES = ("a.test", "b.test", "c.test")


@attrs.define
class World:
    net: TlsNet
    a: ServerProcess  # serves a.test and c.test
    b: ServerProcess
    tokens: dict[str, str] = attrs.Factory(dict)  # "alice@a.test" -> token

    def process(self, name: str) -> ServerProcess:
        return self.b if name == "b.test" else self.a

    def user(self, name: str, local_id: str, *, admin: bool = False) -> str:
        key = f"{local_id}@{name}"
        if key not in self.tokens:
            tenant = None if name in ("a.test", "b.test") else name
            self.tokens[key] = self.process(name).create_user(local_id, admin=admin,
                                                              tenant=tenant)
        return self.tokens[key]

    @contextlib.asynccontextmanager
    async def clients(self) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
        ctx = self.net.ssl_context()
        async with contextlib.AsyncExitStack() as stack:
            out = {}
            for name in NAMES:
                out[name] = await stack.enter_async_context(httpx.AsyncClient(
                    base_url=self.process(name).url, verify=ctx, timeout=30,
                    headers={"Host": name}))
            yield out


def make_world(root: Path, *, extra: dict[str, dict[str, dict[str, Any]]] | None = None
               ) -> World:
    net, (a, b) = federated_servers(root, ["a.test", "b.test"],
                                    tenants={"a.test": ["c.test"]}, extra=extra)
    return World(net, a, b)


@contextlib.contextmanager
def running_world(root: Path, resolve: dict[str, int]) -> Iterator[World]:
    """A world whose a.test and b.test both resolve each name of ``resolve`` to
    127.0.0.1 at its port (hostile peers, servers that come and go), running."""
    extra = {"federation.resolve": {name: f"127.0.0.1:{port}" for name, port in resolve.items()}}
    world = make_world(root, extra={"a.test": extra, "b.test": extra})
    with running(world.a, world.b):
        yield world


async def open_policies(world: World, clients: dict[str, httpx.AsyncClient]) -> None:
    for name in NAMES:
        r = await clients[name].put("/v1/admin/federation/policy", json={
            "default_mode": "open"}, headers=bearer(world.user(name, "root", admin=True)))
        assert r.status_code == 200, r.text


class Person:
    """One user at one tenant, doing what a user does over the local API."""

    def __init__(self, world: World, clients: dict[str, httpx.AsyncClient], server: str,
                 local_id: str) -> None:
        self.server = server
        self.fqid = f"@{local_id}:{server}"
        self.http = clients[server]
        self.token = world.user(server, local_id)

    @classmethod
    def elsewhere(cls, fqid: str) -> Person:
        """Someone on a server we do not drive through the local API (only invited)."""
        person = cls.__new__(cls)
        person.fqid = fqid
        person.server = fqid.partition(":")[2]
        return person

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=bearer(self.token))

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = await self.call(method, path, body)
        assert r.status_code in (200, 201), (self.fqid, method, path, r.text)
        return dict(r.json())

    async def new_room(self, name: str = "room") -> str:
        return str((await self.ok("POST", "/v1/rooms", {"name": name, "federate": True}))[
            "room_id"])

    async def invite(self, room_id: str, who: Person) -> str:
        return str((await self.ok("POST", f"/v1/rooms/{room_id}/invites",
                                  {"fqid": who.fqid}))["invite_id"])

    async def notifications(self) -> list[dict[str, Any]]:
        return list((await self.ok("GET", "/v1/me/notifications?limit=200"))["data"])

    async def invite_to(self, room_id: str, invite_id: str | None = None) -> str:
        """The id of my invite to the room (that one, if given), once it has arrived."""
        async def arrived() -> str | None:
            for n in await self.notifications():
                if n["type"] == "invite" and n["room_id"] == room_id and (
                        invite_id is None or n["invite_id"] == invite_id):
                    return str(n["invite_id"])  # the newest one
            return None

        return str(await wait_for(arrived, what=f"an invite to {room_id} for {self.fqid}"))

    async def accept(self, room_id: str, invite_id: str | None = None) -> None:
        invite_id = await self.invite_to(room_id, invite_id)
        await self.ok("POST", f"/v1/me/invites/{invite_id}/accept")

    async def post(self, room_id: str, body: str) -> str:
        return str((await self.ok("POST", f"/v1/rooms/{room_id}/messages",
                                  {"body": body}))["event_id"])

    async def events(self, room_id: str) -> list[dict[str, Any]]:
        """Every event I see in the room, oldest first (host order)."""
        out: list[dict[str, Any]] = []
        before: str | None = None
        while True:
            path = f"/v1/rooms/{room_id}/messages?limit=200"
            if before is not None:
                path += f"&before={before}"
            r = await self.call("GET", path)
            if r.status_code == 429:  # a polite client waits as told, then asks again
                await trio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code in (403, 404):
                return []  # not in the room (any more): I see nothing of it
            assert r.status_code == 200, (self.fqid, path, r.status_code, r.text)
            page = r.json()
            out.extend(page["data"])
            before = page.get("next")
            if before is None:
                return list(reversed(out))

    async def bodies(self, room_id: str) -> list[str]:
        return [e["content"]["body"] for e in await self.events(room_id)
                if e["type"] == "message" and e["status"] == "sent"
                and "body" in e["content"]]  # a deleted message is a tombstone

    async def event(self, room_id: str, event_id: str) -> dict[str, Any] | None:
        return next((e for e in await self.events(room_id) if e["event_id"] == event_id), None)

    async def members(self, room_id: str) -> dict[str, str]:
        r = await self.call("GET", f"/v1/rooms/{room_id}/members")
        if r.status_code != 200:
            return {}
        return {m["fqid"]: m["membership"] for m in r.json()["data"]}


def ordered(events: list[dict[str, Any]], since: int = 0) -> list[tuple[int, str]]:
    """(seq, event_id) of the host-ordered events from ``since`` on."""
    return [(e["seq"], e["event_id"]) for e in events
            if e["status"] == "sent" and e["seq"] >= since]
