"""A seeded, randomized convergence test: whatever happens, every copy ends equal to the host's.

Three tenants on two processes (a.test and c.test share one, b.test is
another; see tests/world.py). One room, hosted by a tenant the seed picks,
with members on all three. For a bounded time, workers post, reply, react,
join, leave and invite at random while the host and members switch their
federate flags, the host's foreign-participant limit closes and opens, and
a chaos task kill -9s or SIGSTOPs either process. Its first blow is at the
host: kill -9 while a member posts a burst (its queue behind: two ``/send``
in flight), kill -9 again just after the host is back. Then everything is
let back in and every member's copy, from its server's first join onward,
must equal the host's: nothing acknowledged lost, nothing twice, same order,
nothing pending. On every copy, a server's messages and reactions are in
the order it acknowledged them (one acknowledged before the next was asked
for goes first), and no reply or reaction precedes its target.

Set ``SWFED_CONVERGENCE_SEED`` to replay a run; a failure names its seed.
``SWFED_CONVERGENCE_LOGS=DIR`` keeps both processes' logs there (run with
``--basetemp`` to keep their databases too).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.harness import ServerProcess, running, wait_for
from tests.world import NAMES, Person, World, make_world, open_policies, ordered

CHAOS_SECONDS = 35.0
WORKERS = 3
#: Messages a member posts while the host is down: more than a /send holds.
BURST = 150
TRANSIENT = (httpx.TransportError, httpx.TimeoutException)


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("random"),
                   extra={n: {"federation": {"request_timeout_seconds": 5.0}}
                          for n in ("a.test", "b.test")})
    with running(w.a, w.b):
        yield w


class Run:
    """The state of one run: who is in, what was acknowledged."""

    def __init__(self, world: World, clients: dict[str, httpx.AsyncClient],
                 rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.host = rng.choice(NAMES)
        self.owner = Person(world, clients, self.host, "owner")
        # each member tenant's admin: in the room for good, switches its server's flag
        self.roots = {n: Person(world, clients, n, "root") for n in NAMES if n != self.host}
        self.people = [Person(world, clients, n, f"u{i}") for n in NAMES for i in range(2)]
        self.acked: list[tuple[Person, str]] = []  # (author, event_id) answered 201
        #: event_id -> (its server, when asked, when answered 201): messages, reactions
        self.sent: dict[str, tuple[str, float, float]] = {}
        self.room_id = ""
        self.stopped: set[str] = set()
        #: event_id -> every word it showed (posted, then edited): for the delete check
        self.words: dict[str, list[str]] = {}
        #: (who deleted, the delete's event_id, its target) answered 200
        self.deletes: list[tuple[Person, str, str]] = []
        self.reactions: list[tuple[Person, str, str]] = []  # (who, on what, key)

    def log(self, what: str) -> None:
        print(f"[{trio.current_time():8.2f}] {what}")

    async def setup(self) -> None:
        self.room_id = await self.owner.new_room("chaos")
        for person in [*self.roots.values(), *self.people]:
            if person.fqid != self.owner.fqid:
                await person.accept(self.room_id, await self.owner.invite(self.room_id, person))

    # -- random actions -----------------------------------------------------------

    async def act(self) -> None:
        rng = self.rng
        person = rng.choice(self.people)
        roll = rng.random()
        room = self.room_id
        if 0.36 <= roll < 0.45:
            await self.change(person, roll)
        elif roll < 0.36:
            body: dict[str, Any] = {"body": f"m{rng.randrange(10**6)} from {person.fqid}"}
            seen = await self._messages(person)
            if seen and rng.random() < 0.3:
                body["in_reply_to"] = rng.choice(seen)
            if rng.random() < 0.2:
                body["mentions"] = [rng.choice(self.people).fqid]
            await self._post(person, body)
        elif roll < 0.55:
            seen = await self._messages(person)
            if seen:
                asked = trio.current_time()
                target, key = rng.choice(seen), rng.choice(["+1", "🎉", "👀"])
                r = await person.call("POST", f"/v1/rooms/{room}/messages/{target}"
                                      "/reactions", {"key": key})
                if r.status_code == 201:  # created now (the same one again answers 200)
                    self.sent.setdefault(r.json()["event_id"],
                                         (person.server, asked, trio.current_time()))
                    self.reactions.append((person, target, key))
        elif roll < 0.62:
            await person.call("POST", f"/v1/rooms/{room}/leave")
        elif roll < 0.77:
            inviter = self.owner if rng.random() < 0.7 else rng.choice(self.people)
            r = await inviter.call("POST", f"/v1/rooms/{room}/invites", {"fqid": person.fqid})
            if r.status_code == 201:
                await trio.sleep(rng.random() * 0.3)
                await person.call("POST", f"/v1/me/invites/{r.json()['invite_id']}/accept")
        elif roll < 0.84:
            flag = rng.random() < 0.5
            await self.owner.call("PATCH", f"/v1/rooms/{room}", {"federate": flag})
        elif roll < 0.91:
            root = rng.choice(list(self.roots.values()))
            await root.call("PATCH", f"/v1/rooms/{room}", {"federate": rng.random() < 0.5})
        else:
            limit = rng.choice([1, 2, 50, 50])
            await self._policy(self.host, {"max_foreign_participants_per_room": limit})

    async def _post(self, person: Person, body: dict[str, Any]) -> None:
        asked = trio.current_time()
        r = await person.call("POST", f"/v1/rooms/{self.room_id}/messages", body)
        if r.status_code == 201:
            self.acked.append((person, r.json()["event_id"]))
            self.sent[r.json()["event_id"]] = (person.server, asked, trio.current_time())
            self.words[r.json()["event_id"]] = [body["body"].split()[0]]

    async def change(self, person: Person, roll: float) -> None:
        """Edit or delete one of my messages, or take one of my reactions off."""
        rng = self.rng
        room = self.room_id
        mine = [eid for author, eid in self.acked
                if author is person and eid in self.words]
        reactions = [(t, k) for who, t, k in self.reactions if who is person]
        asked = trio.current_time()
        if roll < 0.40 and mine:
            target = rng.choice(mine)
            word = f"e{rng.randrange(10**6)}"
            r = await person.call("PATCH", f"/v1/rooms/{room}/messages/{target}",
                                  {"body": f"{word} edited by {person.fqid}"})
            if r.status_code == 200:
                self.words[target].append(word)
        elif roll < 0.43 and mine:
            target = rng.choice(mine)
            r = await person.call("DELETE", f"/v1/rooms/{room}/messages/{target}")
            if r.status_code == 200:
                self.deletes.append((person, r.json()["event_id"], target))
        elif reactions:
            target, key = rng.choice(reactions)
            r = await person.call("DELETE",
                                  f"/v1/rooms/{room}/messages/{target}/reactions/{key}")
        else:
            return
        if r.status_code == 200:
            self.acked.append((person, r.json()["event_id"]))
            self.sent[r.json()["event_id"]] = (person.server, asked, trio.current_time())

    async def _messages(self, person: Person) -> list[str]:
        r = await person.call("GET", f"/v1/rooms/{self.room_id}/messages?limit=20")
        if r.status_code != 200:
            return []
        return [e["event_id"] for e in r.json()["data"]
                if e["type"] == "message" and e["status"] == "sent"]

    async def _policy(self, name: str, body: dict[str, Any]) -> None:
        admin = self.owner if name == self.host else self.roots[name]
        await admin.http.put("/v1/admin/federation/policy", json=body,
                             headers={"Authorization": f"Bearer {self.world.user(name, 'root')}"})

    async def worker(self, deadline: float) -> None:
        while trio.current_time() < deadline:
            try:
                await self.act()
            except TRANSIENT:
                await trio.sleep(0.1)

    async def chaos(self, deadline: float) -> None:
        rng = self.rng
        await trio.sleep(2 + rng.random() * 3)
        await self.host_down_under_a_burst()
        while True:
            await trio.sleep(4 + rng.random() * 6)
            if trio.current_time() > deadline:
                return
            proc = rng.choice([self.world.a, self.world.b])
            if rng.random() < 0.5:
                self.log(f"kill -9 {proc.name}")
                await trio.to_thread.run_sync(proc.kill)
                await trio.sleep(0.5 + rng.random() * 1.5)
                await trio.to_thread.run_sync(proc.start)
            else:
                self.log(f"SIGSTOP {proc.name}")
                self._signal(proc, signal.SIGSTOP)
                await trio.sleep(1 + rng.random() * 3)
                self._signal(proc, signal.SIGCONT)

    async def host_down_under_a_burst(self) -> None:
        """kill -9 the host; a member posts :data:`BURST` messages; the host comes back
        and is killed again while that member's queue has two /send in flight."""
        rng = self.rng
        host = self.world.process(self.host)
        poster = rng.choice([p for p in self.people if self.world.process(p.server) is not host])
        self.log(f"kill -9 {host.name} (the host), {poster.fqid} posts {BURST}")
        await trio.to_thread.run_sync(host.kill)
        for i in range(BURST):
            try:
                await self._post(poster, {"body": f"burst {i} from {poster.fqid}"})
            except TRANSIENT:
                pass
        for _ in range(2):
            await trio.to_thread.run_sync(host.start)
            await trio.sleep(rng.random() * 0.5)
            self.log(f"kill -9 {host.name} again")
            await trio.to_thread.run_sync(host.kill)
        await trio.to_thread.run_sync(host.start)

    def _signal(self, proc: ServerProcess, sig: signal.Signals) -> None:
        assert proc.proc is not None
        proc.proc.send_signal(sig)

    # -- letting everything back in ------------------------------------------------

    async def settle(self) -> None:
        room = self.room_id
        for name in NAMES:
            await self._retry(lambda n=name: self._policy(n, {  # type: ignore[misc]
                "default_mode": "open", "max_foreign_participants_per_room": 50}))
        await self._retry(lambda: self.owner.ok("PATCH", f"/v1/rooms/{room}",
                                                {"federate": True}))
        for root in self.roots.values():
            await self._retry(lambda r=root: r.ok(  # type: ignore[misc]
                "PATCH", f"/v1/rooms/{room}", {"federate": True}))
        for person in self.people:
            await self._retry(lambda p=person: self._rejoin(p))  # type: ignore[misc]
        await self._retry(lambda: self.owner.ok("POST", f"/v1/rooms/{room}/messages",
                                                {"body": "the end"}))

    async def _rejoin(self, person: Person) -> None:
        room = self.room_id
        if (await person.call("GET", f"/v1/rooms/{room}")).status_code == 200:
            return
        r = await self.owner.call("POST", f"/v1/rooms/{room}/invites", {"fqid": person.fqid})
        assert r.status_code == 201, r.text
        invite_id = await person.invite_to(room, r.json()["invite_id"])
        r = await person.call("POST", f"/v1/me/invites/{invite_id}/accept")
        assert r.status_code == 200, r.text

    async def _retry(self, fn: Any) -> None:
        last = ""

        async def attempt() -> bool:
            nonlocal last
            try:
                await fn()
                return True
            except (AssertionError, *TRANSIENT) as exc:
                if repr(exc) != last:
                    last = repr(exc)
                    self.log(f"retrying: {last}"[:300])
                return False

        await wait_for(attempt, timeout=90, interval=0.5, what="a settling step")

    # -- what must hold -----------------------------------------------------------

    async def converged(self) -> bool:
        host_events = await self.owner.events(self.room_id)
        for name in NAMES:
            if name == self.host:
                continue
            since = min(e["seq"] for e in host_events if e["type"] == "member"
                        and e["sender"].endswith(":" + name)
                        and e["content"].get("membership") == "join")
            for person in [p for p in self.people if p.server == name]:
                events = await person.events(self.room_id)
                if any(e["status"] == "pending" for e in events):
                    return False
                if ordered(events, since) != ordered(host_events, since):
                    return False
        return True

    async def check(self) -> None:
        host_events = await self.owner.events(self.room_id)
        at_host = {e["event_id"] for e in host_events}
        seqs = [e["seq"] for e in host_events]
        assert len(at_host) == len(host_events) and len(set(seqs)) == len(seqs)
        assert seqs == list(range(1, len(seqs) + 1)), "the host's order has a hole"
        copies = {person.fqid: await person.events(self.room_id) for person in self.people}
        for person in self.people:
            ids = [e["event_id"] for e in copies[person.fqid]]
            assert len(ids) == len(set(ids)), f"{person.fqid} has an event twice"
        for author, event_id in self.acked:
            mine = next((e for e in copies[author.fqid] if e["event_id"] == event_id), None)
            assert mine is not None, f"{author.fqid} lost acknowledged {event_id}"
            if mine["status"] == "sent":
                assert event_id in at_host, f"{event_id} is sent but not at the host"
            else:
                assert mine["status"] == "refused" and event_id not in at_host
                assert author.server != self.host
        assert self.acked, "the run acknowledged nothing"
        for who, events in [("the host", host_events), *copies.items()]:
            self.check_order(who, events)
        await self.check_deletes(host_events)

    async def check_deletes(self, host_events: list[dict[str, Any]]) -> None:
        """A delete the host ordered leaves no word of its message on any copy, nor in
        any server's search: not the posted body, nor any edit's."""
        at_host = {e["event_id"]: e for e in host_events}
        deleted = [target for _, delete, target in self.deletes
                   if delete in at_host and at_host[delete]["status"] == "sent"]
        for person in [self.owner, *self.people]:
            events = {e["event_id"]: e for e in await person.events(self.room_id)}
            for target in deleted:
                if target in events:
                    assert "body" not in events[target]["content"], (
                        f"{person.fqid} still shows deleted {target}")
                for word in self.words[target]:
                    r = await person.call("GET", f"/v1/search?q={word}")
                    assert r.status_code == 200, r.text
                    assert target not in [e["event_id"] for e in r.json()["data"]], (
                        f"{person.fqid}'s search finds {word!r} of deleted {target}")
        self.log(f"{len(deleted)} deletes ordered by the host")

    def check_order(self, who: str, events: list[dict[str, Any]]) -> None:
        """In ``who``'s copy: each server's messages and reactions in the order it answered
        them, and no reply or reaction before its target."""
        at = {e["event_id"]: e for e in events}
        placed = sorted((e["seq"], eid, self.sent[eid]) for eid, e in at.items()
                        if eid in self.sent and e["status"] == "sent")
        for i, (seq, eid, (server, _, answered)) in enumerate(placed):
            for later_seq, later, (later_server, asked, _) in placed[:i]:
                # `later` is ordered before `eid`, though asked for after eid was answered
                assert not (later_server == server and asked > answered), (
                    f"{who}: {later} (seq {later_seq}) is ordered before {eid} (seq {seq}), "
                    f"which {server} had acknowledged before it was asked for")
        for e in events:
            if e["status"] != "sent":
                continue
            target = e["content"].get("in_reply_to" if e["type"] == "message"
                                      else "relates_to")
            if isinstance(target, str) and target in at:
                assert at[target]["status"] == "sent" and at[target]["seq"] < e["seq"], (
                    f"{who}: {e['type']} {e['event_id']} (seq {e['seq']}) precedes its "
                    f"target {target} ({at[target]['status']}, seq {at[target]['seq']})")


async def test_random_events_and_faults_converge(world: World) -> None:
    seed = int(os.environ.get("SWFED_CONVERGENCE_SEED") or random.randrange(2**32))
    print(f"SWFED_CONVERGENCE_SEED={seed}")
    try:
        async with world.clients() as clients:
            await open_policies(world, clients)
            run = Run(world, clients, random.Random(seed))
            run.log(f"host {run.host}")
            await run.setup()
            deadline = trio.current_time() + CHAOS_SECONDS
            async with trio.open_nursery() as nursery:
                for _ in range(WORKERS):
                    nursery.start_soon(run.worker, deadline)
                nursery.start_soon(run.chaos, deadline)
            await run.settle()
            await wait_for(run.converged, timeout=90, interval=0.5,
                           what="every copy to equal the host's")
            await run.check()
            run.log(f"{len(run.acked)} acknowledged posts")
    except BaseException as exc:
        raise AssertionError(f"convergence failed with SWFED_CONVERGENCE_SEED={seed}: "
                             f"{exc!r}") from exc
    finally:
        if dump := os.environ.get("SWFED_CONVERGENCE_LOGS"):  # a folder for both servers' logs
            Path(dump).mkdir(parents=True, exist_ok=True)
            for proc in (world.a, world.b):
                (Path(dump) / f"{proc.name}.log").write_text("\n".join(proc.log_lines))
