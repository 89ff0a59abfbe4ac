"""Benchmarks (run them with scripts/bench): one JSON line per mode.

Every mode starts real swfed processes with TLS (a trustme CA) on 127.0.0.1,
opens their policies and shares a room between @alice:a.test and
@bob:b.test. Figures are ratios measured side by side in one run, because
the machine is shared and noisy; absolute numbers only say what it did then.

Modes (``--mode``, default ``all``):

- ``floor``: wrk (Debian's package, installed if missing) against
  ``GET /.well-known/scaiwave/server`` on a.test -- no auth, no database, the
  framework's own cost -- then against ``POST /v1/rooms/{id}/messages`` in the
  room shared with b.test (every message is signed, committed, sent to b.test,
  verified and committed there), then a local room and ``GET /v1/me``. For each:
  req/s, and the server CPU per request from /proc (the federated row counts
  both processes until b.test has every message). ``post_vs_floor`` and
  ``cpu_vs_floor`` are the ratios the goals are set in.
- ``crypto``: the single-core Ed25519 sign and verify rates of canonical JSON.
- ``catchup``: b.test is killed, alice posts ``--queued`` messages (32 in
  flight, each answered 201) into the room shared with it, then b.test starts
  again. Timed from the moment b.test listens until a.test's sender has had
  every one of them settled by b.test (counted from a.test's log, which costs
  the servers nothing; a.test's queue is then checked to be empty).
  ``events_per_s`` is that catch-up rate, ``verify_per_s`` the single-core
  Ed25519 verify rate measured right after in the same run, and
  ``vs_verify`` their ratio (the goal is >= 0.5); ``cpu_ms_b`` is b.test's
  CPU per event while it caught up.
- ``latency``: open-loop, paced load: alice offers ``--rate`` messages/s for
  ``--paced-seconds`` into the shared room, each POST started at its
  scheduled time in its own task whatever the earlier ones are doing (on 128
  connections opened beforehand, lent first come, first served), while bob
  holds ``GET /v1/me/stream`` open on b.test. Latency is from a message's
  scheduled send time to its arrival on bob's stream, so waiting for a
  connection, a late client and a slow server all count. p50/p90/p99/max
  leave out the messages of the first second (warm-up); ``p99_all_ms``
  includes them. ``post_p50_ms``/``post_p99_ms``: the same from scheduled
  send to a.test's 201 (the local part). Also: the achieved rate (201s per
  second), messages that never arrived, a.test's and b.test's CPU per
  message, and how late the client itself started sends
  (``client_late_p99_ms``: when that is large the bench, not the server, was
  the limit). The goal is p99 < 50 ms at 500/s.
- ``fanout``: b.test's process also serves ``--fanout-peers`` - 1 more
  tenants (t1.test, ...); a room hosted by a.test holds alice and one user of
  each of those ``--fanout-peers`` servers. a.test's CPU per posted event
  (POST, 16 in flight, until every peer has it) with ``--fanout-messages``
  messages in the room shared with one peer, then as many in the room shared
  with all of them (50 by default): ``cpu_ms_per_event_1_peer``,
  ``cpu_ms_per_event_50_peers`` and their ratio ``ratio`` (the goal is < 2);
  b.test's process's CPU per event is shown too (``cpu_ms_b_*``);
  ``delivered_s_*`` is the time from the first POST until every peer had
  every event.
- ``memory``: a.test's RSS while events pile up for a peer that is down:
  b.test is killed and alice posts ``--memory-queued`` messages as fast as
  32 in flight allow. RSS before, after 10 %, 50 % and 100 % of the posts
  and one second later; ``growth`` is RSS at 100 % over RSS at 10 % (the
  goal is within 0.9..1.1).
- ``media``: one file of ``--media-mib`` MiB (default 100) uploaded to a.test
  (``POST /v1/media``), downloaded from it, then attached in the shared room
  and downloaded by bob from b.test twice (the first fetches it from a.test
  and checks its hash; the second is b.test's copy), against a plain copy of
  the same bytes on the same disk with fsync: MiB/s of each and
  ``upload_vs_copy`` / ``download_vs_copy``.

``all`` runs them in the order above. After each mode, stderr has a count of
the warnings and errors each server logged, by event name.

The servers run with ``[limits]`` raised so that a benchmark measures the
machine, not the rate limits a server applies to one token or one peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swfed.core.signing import generate_keypair, sign_json, verify_signed_json  # noqa: E402
from tests.harness import ServerProcess, TlsNet, federated_servers, wait_for  # noqa: E402

#: Limits high enough that no bench ever meets them.
OPEN_LIMITS = {"client_requests_per_second": 100_000.0, "client_burst": 1_000_000,
               "federation_requests_per_second": 100_000.0, "federation_burst": 1_000_000,
               "federation_events_per_second": 1_000_000.0,
               "federation_events_burst": 10_000_000}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def crypto_rates(seconds: float = 1.0) -> tuple[float, float]:
    """Single-core Ed25519 sign and verify rates of a signed message event."""
    kp = generate_keypair()
    event = {"event_id": "00000000-0000-4000-8000-000000000000", "room_id": "!abc:a.test",
             "type": "message", "sender": "@alice:a.test", "origin": "a.test",
             "origin_ts": 1_700_000_000_000, "content": {"body": "hello " * 10}}
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        signed = sign_json(event, "a.test", kp)
        n += 1
    sign_rate = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        verify_signed_json(signed, "a.test", kp.key_id, kp.verify_key_bytes)
        n += 1
    return sign_rate, n / (time.perf_counter() - start)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cpu_seconds(server: ServerProcess) -> float:
    """User + system CPU the server process has used so far (all its threads)."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@attrs.define
class World:
    """Two servers sharing a DM room (alice on a.test hosts it, bob on b.test joined)."""
    net: TlsNet
    a: ServerProcess
    b: ServerProcess
    ca: httpx.AsyncClient
    cb: httpx.AsyncClient
    tokens: dict[str, str]
    room_id: str
    local_room_id: str

    async def queue_depth(self, server: str = "a") -> int:
        client, token = (self.ca, self.tokens["ra"]) if server == "a" else \
            (self.cb, self.tokens["rb"])
        r = await client.get("/v1/admin/federation/peers", headers=bearer(token))
        return sum(int(p.get("queue_depth") or 0) for p in r.json()["data"])

    async def drained(self, timeout: float = 600) -> None:
        """Wait until a.test has nothing queued for any peer."""
        await wait_for(lambda: self._empty(), timeout=timeout, interval=0.05,
                       what="a.test's queue to drain")

    async def _empty(self) -> bool:
        return await self.queue_depth() == 0


@contextlib.asynccontextmanager
async def world(root: Path, *, tenants: dict[str, list[str]] | None = None,
                extra: dict[str, dict[str, Any]] | None = None) -> AsyncIterator[World]:
    tables: dict[str, dict[str, Any]] = {"server": {"log_level": "info"},
                                         "limits": dict(OPEN_LIMITS)}
    for table, values in (extra or {}).items():
        tables.setdefault(table, {}).update(values)
    net, (a, b) = federated_servers(root, ["a.test", "b.test"], tenants=tenants,
                                    extra={n: tables for n in ("a.test", "b.test")})
    a.start()
    b.start()
    try:
        tokens = {"ra": a.create_user("root", admin=True), "alice": a.create_user("alice"),
                  "rb": b.create_user("root", admin=True), "bob": b.create_user("bob")}
        ctx = net.ssl_context()
        async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=60,
                                     limits=httpx.Limits(max_connections=64)) as ca, \
                httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=60,
                                  limits=httpx.Limits(max_connections=64)) as cb:
            for c, t in ((ca, tokens["ra"]), (cb, tokens["rb"])):
                r = await c.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                                headers=bearer(t))
                r.raise_for_status()
            r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                              headers=bearer(tokens["alice"]))
            r.raise_for_status()
            room_id = r.json()["room_id"]
            await accept_invite(cb, tokens["bob"])

            async def joined() -> bool:
                r = await ca.get(f"/v1/rooms/{room_id}/members",
                                 headers=bearer(tokens["alice"]))
                return sum(m["membership"] == "join" for m in r.json()["data"]) == 2

            await wait_for(joined, what="bob's join")
            r = await ca.post("/v1/rooms", json={"name": "local"},
                              headers=bearer(tokens["alice"]))
            r.raise_for_status()
            yield World(net, a, b, ca, cb, tokens, room_id, r.json()["room_id"])
    finally:
        a.kill()
        b.kill()
        for server in (a, b):
            log_summary(server)


def log_summary(server: ServerProcess) -> None:
    """Print to stderr how many warnings and errors the server logged, by event name."""
    counts: dict[str, int] = {}
    for line in server.log_lines:
        if '"level": "warning"' in line or '"level": "error"' in line \
                or '"level": "critical"' in line:
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            key = f"{fields.get('level')} {fields.get('event')}"
            counts[key] = counts.get(key, 0) + 1
    if counts:
        shown = ", ".join(f"{n} x {k}" for k, n in sorted(counts.items()))
        print(f"bench: {server.name} logged: {shown}", file=sys.stderr)


async def accept_invite(client: httpx.AsyncClient, token: str, timeout: float = 30, *,
                        host: str | None = None, room_id: str | None = None) -> None:
    """Wait for the user's (newest) pending invite, to ``room_id`` if given, and accept it.

    ``host``: the tenant the user is on, when the process serves several.
    """
    headers = bearer(token) | ({"Host": host} if host else {})

    async def invite() -> str | None:
        r = await client.get("/v1/me/notifications", headers=headers)
        ids = [n["invite_id"] for n in r.json()["data"] if n.get("invite_id")
               and room_id in (None, n.get("room_id"))]
        return ids[0] if ids else None

    iid = await wait_for(invite, what="an invite", timeout=timeout)
    r = await client.post(f"/v1/me/invites/{iid}/accept", headers=headers)
    r.raise_for_status()


# -- wrk ----------------------------------------------------------------------

WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, '
    .. '"p50_ms": %.2f, "p99_ms": %.2f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk (Debian package)", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk is needed (apt-get install wrk)")
    return found


def wrk_script(path: Path, *, method: str = "GET", body: Any = None,
               headers: dict[str, str] | None = None) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    path.write_text("\n".join(lines) + "\n" + WRK_REPORT)
    return path


async def run_wrk(url: str, script: Path, *, seconds: float, connections: int,
                  threads: int = 1) -> dict[str, Any]:
    result = await trio.run_process(
        [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "-s", str(script), url], capture_stdout=True, capture_stderr=True)
    out = result.stdout.decode()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report:\n{out}\n{result.stderr.decode()}")
    report: dict[str, Any] = json.loads(line[4:])
    report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
    return report


async def measure(w: World, name: str, path: str, script: Path, *, seconds: float,
                  connections: int, settle: Callable[[], Any] | None = None
                  ) -> dict[str, Any]:
    """wrk against a.test; CPU of a.test (and b.test) until ``settle`` returns."""
    cpu0 = (cpu_seconds(w.a), cpu_seconds(w.b))
    report = await run_wrk(w.a.url + path, script, seconds=seconds, connections=connections)
    if settle is not None:
        await settle()
    cpu_a, cpu_b = cpu_seconds(w.a) - cpu0[0], cpu_seconds(w.b) - cpu0[1]
    ok = report["requests"] - report["non_2xx"]
    return {"what": name, "req_per_s": round(report["rps"], 1), "requests": report["requests"],
            "failed": report["non_2xx"] + report["errors"],
            "p50_ms": report["p50_ms"], "p99_ms": report["p99_ms"],
            "cpu_ms_a": round(cpu_a * 1000 / max(ok, 1), 3),
            "cpu_ms_b": round(cpu_b * 1000 / max(ok, 1), 3)}


async def mode_floor(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    async with world(root) as w:
        alice = {"Authorization": f"Bearer {w.tokens['alice']}"}
        s_floor = wrk_script(root / "floor.lua")
        s_post = wrk_script(root / "post.lua", method="POST", body={"body": "bench"},
                            headers=alice)
        s_me = wrk_script(root / "me.lua", headers=alice)
        # warm up both paths (connections, caches, the JIT-less interpreter's dicts)
        for path, script in (("/.well-known/scaiwave/server", s_floor),
                             (f"/v1/rooms/{w.room_id}/messages", s_post)):
            await run_wrk(w.a.url + path, script, seconds=1, connections=args.connections)
        await w.drained()
        kw = {"seconds": args.seconds, "connections": args.connections}
        floor = await measure(w, "floor GET /.well-known/scaiwave/server",
                              "/.well-known/scaiwave/server", s_floor, **kw)
        fed = await measure(w, "POST message, room shared with b.test",
                            f"/v1/rooms/{w.room_id}/messages", s_post, settle=w.drained, **kw)
        local = await measure(w, "POST message, local room",
                              f"/v1/rooms/{w.local_room_id}/messages", s_post, **kw)
        me = await measure(w, "GET /v1/me", "/v1/me", s_me, **kw)
        fed_cpu = fed["cpu_ms_a"] + fed["cpu_ms_b"]
        return {"mode": "floor", "connections": args.connections, "seconds": args.seconds,
                "post_vs_floor": round(fed["req_per_s"] / floor["req_per_s"], 2),
                "cpu_vs_floor": round(fed_cpu / floor["cpu_ms_a"], 2),
                "rows": [floor, fed, local, me]}


async def mode_crypto(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    sign_rate, verify_rate = crypto_rates()
    return {"mode": "crypto", "sign_per_s": round(sign_rate), "verify_per_s": round(verify_rate)}


# -- load: raw HTTP/1.1 over TLS ------------------------------------------------


class Raw:
    """One keep-alive HTTP/1.1 connection over TLS that sends prepared requests.

    The load's client, the way wrk is for the floor: httpx costs the bench
    about a millisecond of CPU per request, which at 500/s is half of this
    machine's second core taken from the servers being measured. This
    writes the request bytes and reads the status line, headers and a
    ``Content-Length`` body: all our server answers these with.
    """

    def __init__(self, port: int, ctx: Any) -> None:
        self.port = port
        self.ctx = ctx
        self.host = f"127.0.0.1:{port}"
        self.stream: trio.SSLStream[trio.SocketStream] | None = None
        self.buf = b""

    async def _open(self) -> trio.SSLStream[trio.SocketStream]:
        if self.stream is None:
            self.stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", self.port,
                                                              ssl_context=self.ctx)
            self.buf = b""
        return self.stream

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method != "GET":
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        stream = await self._open()
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        while b"\r\n\r\n" not in self.buf:
            await self._more()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(ln.split(":", 1)[1]) for ln in lines[1:]
                       if ln.lower().startswith("content-length:")), None)
        if length is None:
            raise RuntimeError(f"no Content-Length in the answer: {raw[:300]!r}")
        while len(self.buf) < length:
            await self._more()
        out, self.buf = self.buf[:length], self.buf[length:]
        if any(ln.lower().replace(" ", "") == "connection:close" for ln in lines[1:]):
            await self.aclose()  # hypercorn ends a connection after 1,000 requests
        return status, out

    async def post_json(self, path: str, value: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("POST", path, headers=headers,
                                  body=json.dumps(value).encode())

    async def _more(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        self.buf += data


@attrs.define
class Connections:
    """``n`` keep-alive connections to one server, lent out first come, first served."""
    free: trio.MemoryReceiveChannel[Raw]
    back: trio.MemorySendChannel[Raw]

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Raw]:
        """Wait for a free connection (in arrival order); give it back after."""
        conn = await self.free.receive()
        try:
            yield conn
        finally:
            self.back.send_nowait(conn)


@contextlib.asynccontextmanager
async def connections(server: ServerProcess, net: TlsNet, n: int) -> AsyncIterator[Connections]:
    """Open ``n`` connections to ``server`` (a cheap GET on each) before any load starts.

    Opened under load, their TLS handshakes would cost the server and the
    client just when they are behind.
    """
    back, free = trio.open_memory_channel[Raw](n)
    ctx = net.ssl_context()
    conns: list[Raw] = []

    async def open_one() -> None:
        conn = Raw(server.port, ctx)
        status, _ = await conn.request("GET", "/.well-known/scaiwave/server")
        if status != 200:
            raise RuntimeError(f"GET /.well-known/scaiwave/server: {status}")
        conns.append(conn)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(open_one)
        for conn in conns:
            back.send_nowait(conn)
        yield Connections(free, back)
    finally:
        for conn in conns:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await conn.aclose()


async def post_messages(w: World, room_id: str, n: int, *, concurrency: int = 32,
                        body: str = "bench {i}",
                        on_done: Callable[[int], None] | None = None) -> float:
    """Alice POSTs ``n`` messages to a.test, ``concurrency`` in flight; each must answer 201.

    Each in-flight slot has a connection of its own (:func:`connections`).
    Returns the seconds it took; ``on_done(k)`` runs after the k-th answer.
    """
    url = f"/v1/rooms/{room_id}/messages"
    headers = bearer(w.tokens["alice"])
    indexes = iter(range(n))  # shared by the workers: each takes the next index
    done = 0

    async def worker(pool: Connections) -> None:
        nonlocal done
        async with pool.lend() as client:
            for i in indexes:
                status, out = await client.post_json(url, {"body": body.format(i=i)}, headers)
                if status != 201:
                    raise RuntimeError(f"POST {url} ({body.format(i=i)!r}): "
                                       f"{status} {out[:500]!r}")
                done += 1
                if on_done is not None:
                    on_done(done)

    concurrency = max(1, min(concurrency, n))
    async with connections(w.a, w.net, concurrency) as pool:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker, pool)
        return time.perf_counter() - start


def progress(what: str, total: int, every: float = 0.1) -> Callable[[int], None]:
    """An ``on_done`` that prints ``what`` to stderr at every ``every`` of ``total``."""
    step = max(1, round(total * every))

    def on_done(k: int) -> None:
        if k % step == 0 or k == total:
            print(f"bench: {what} {k}/{total}", file=sys.stderr, flush=True)
    return on_done


@attrs.define
class SettledCounter:
    """Events a server's sender has had settled by peers (stored, or refused for good).

    Read from the server's own log (``federation.send.success`` lines carry
    ``events`` and ``refused`` per answered batch), so watching costs the
    servers nothing -- unlike polling the admin API, whose queue view counts
    the outbox on every call. Incremental: each poll reads only new lines.
    """
    server: ServerProcess
    pos: int = 0
    events: int = 0
    refused: int = 0

    @classmethod
    def from_now(cls, server: ServerProcess) -> SettledCounter:
        return cls(server, len(server.log_lines))

    def poll(self) -> int:
        lines = self.server.log_lines
        end = len(lines)
        for line in lines[self.pos:end]:
            if '"federation.send.success"' in line:
                fields = json.loads(line)
                self.events += int(fields.get("events") or 0)
                self.refused += int(fields.get("refused") or 0)
        self.pos = end
        return self.events + self.refused


async def settled(w: World, counter: SettledCounter, expected: int,
                  timeout: float = 1200) -> None:
    """Wait until ``counter`` (a.test's) reaches ``expected``; then a.test's queue is empty.

    Polls the log every 20 ms. Once a second the queue depth is asked too, as
    a safety net should the log lines change: an empty queue ends the wait.
    """
    deadline = trio.current_time() + timeout
    next_check = trio.current_time() + 1
    while counter.poll() < expected:
        now = trio.current_time()
        if now > deadline:
            raise AssertionError(f"timed out after {timeout}s: {counter.poll()} of {expected} "
                                 "events settled")
        if now >= next_check:
            next_check = now + 1
            if await w.queue_depth() == 0:
                print(f"bench: a.test's queue is empty but its log shows {counter.poll()} of "
                      f"{expected} events settled", file=sys.stderr)
                break
        await trio.sleep(0.02)
    await w.drained()


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``, which must be sorted."""
    rank = max(1, -(-len(values) * p // 100))  # ceil
    return values[int(rank) - 1]


# -- catch-up -------------------------------------------------------------------


async def mode_catchup(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    n = args.queued
    async with world(root) as w:
        alice = w.tokens["alice"]
        await post_messages(w, w.room_id, 50)  # warm up a.test's POST path
        await w.drained()
        w.b.kill()
        post_s = await post_messages(w, w.room_id, n, body="catchup {i}",
                                     on_done=progress("catchup: posted", n))
        queued = await w.queue_depth()
        counter = SettledCounter.from_now(w.a)
        w.b.start()  # returns once b.test listens
        start, cpu_b0 = trio.current_time(), cpu_seconds(w.b)
        await settled(w, counter, n)
        seconds = trio.current_time() - start
        cpu_b = cpu_seconds(w.b) - cpu_b0
        newest_a, newest_b = await newest_event(w.ca, alice, w.room_id), \
            await newest_event(w.cb, w.tokens["bob"], w.room_id)
        _, verify_rate = crypto_rates()  # after the drain: the servers are idle
        rate = n / seconds
        return {"mode": "catchup", "queued": n, "queue_depth_before": queued,
                "post_per_s": round(n / post_s, 1), "seconds": round(seconds, 2),
                "events_per_s": round(rate, 1), "verify_per_s": round(verify_rate),
                "vs_verify": round(rate / verify_rate, 3),
                "cpu_ms_b": round(cpu_b * 1000 / n, 3), "refused": counter.refused,
                "b_has_newest": newest_a == newest_b}


async def newest_event(client: httpx.AsyncClient, token: str, room_id: str) -> str | None:
    r = await client.get(f"/v1/rooms/{room_id}/messages", params={"limit": 1},
                         headers=bearer(token))
    r.raise_for_status()
    data = r.json()["data"]
    return data[0]["event_id"] if data else None


# -- latency --------------------------------------------------------------------

#: Messages scheduled in the first second are left out of latency percentiles.
WARMUP_SECONDS = 1.0
#: Connections to a.test the paced sender may use at once.
LATENCY_CONNECTIONS = 128


async def watch_stream(client: httpx.AsyncClient, token: str, prefix: str,
                       arrived: dict[int, float], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Hold ``GET /v1/me/stream`` open; note when message ``{prefix}{i}`` first arrives.

    Started (``nursery.start``) once the server has sent the stream's first line.
    """
    timeout = httpx.Timeout(60, read=None)
    async with client.stream("GET", "/v1/me/stream", headers=bearer(token),
                             timeout=timeout) as r:
        r.raise_for_status()
        first = True
        async for line in r.aiter_lines():
            now = trio.current_time()
            if first:
                task_status.started()
                first = False
            if not line.startswith("data: "):
                continue
            payload = json.loads(line[6:])
            body = (payload.get("content") or {}).get("body")
            if payload.get("type") == "message" and isinstance(body, str) \
                    and body.startswith(prefix):
                arrived.setdefault(int(body[len(prefix):]), now)


@attrs.define
class Paced:
    """One paced run: message ``i`` was due at ``t0 + i / rate`` (trio's clock)."""
    t0: float
    rate: float
    late: list[float] = attrs.Factory(list)                # start of each POST - its due time
    answered: dict[int, float] = attrs.Factory(dict)       # index -> its 201
    arrived: dict[int, float] = attrs.Factory(dict)        # index -> on bob's stream
    failures: list[str] = attrs.Factory(list)

    def due(self, i: int) -> float:
        return self.t0 + i / self.rate

    def latencies_ms(self, times: dict[int, float], warmup: float = 0.0) -> list[float]:
        """Sorted ms from due time to ``times``, without messages due in the first
        ``warmup`` seconds (unless that leaves none)."""
        ms = {i: (t - self.due(i)) * 1000 for i, t in times.items()}
        return sorted(v for i, v in ms.items() if i / self.rate >= warmup) \
            or sorted(ms.values())


async def paced_posts(run: Paced, pool: Connections, token: str, room_id: str, n: int) -> None:
    """POST message ``lat {i}`` at its due time, each in its own task; wait for every answer."""
    url = f"/v1/rooms/{room_id}/messages"
    headers = bearer(token)

    async def send(i: int) -> None:
        run.late.append(trio.current_time() - run.due(i))
        async with pool.lend() as client:  # the wait counts in the latency
            status, out = await client.post_json(url, {"body": f"lat {i}"}, headers)
        if status == 201:
            run.answered[i] = trio.current_time()
        else:
            run.failures.append(f"{status} {out[:200]!r}")

    async with trio.open_nursery() as nursery:
        for i in range(n):
            await trio.sleep_until(run.due(i))
            nursery.start_soon(send, i)


async def mode_latency(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    rate, n = args.rate, max(1, round(args.rate * args.paced_seconds))
    async with world(root) as w, connections(w.a, w.net, LATENCY_CONNECTIONS) as pool, \
            trio.open_nursery() as watcher:
        run = Paced(0.0, rate)
        await watcher.start(watch_stream, w.cb, w.tokens["bob"], "lat ", run.arrived)
        run.t0 = trio.current_time() + 0.1  # bob listens: the first message is due now
        cpu0 = (time.process_time(), cpu_seconds(w.a), cpu_seconds(w.b))
        await paced_posts(run, pool, w.tokens["alice"], w.room_id, n)
        client_cpu = time.process_time() - cpu0[0]
        with trio.move_on_after(30):  # the stragglers; what is still missing is lost
            while len(run.arrived) < n - len(run.failures):
                await trio.sleep(0.05)
        watcher.cancel_scope.cancel()
        cpu_a, cpu_b = cpu_seconds(w.a) - cpu0[1], cpu_seconds(w.b) - cpu0[2]
    wall = max(run.answered.values(), default=run.t0) - run.t0
    stream = run.latencies_ms(run.arrived, WARMUP_SECONDS)
    post = run.latencies_ms(run.answered, WARMUP_SECONDS)
    every, late = run.latencies_ms(run.arrived), sorted(run.late)

    def pct(values: list[float], p: float, scale: float = 1.0) -> float | None:
        return round(percentile(values, p) * scale, 1) if values else None

    return {"mode": "latency", "offered_per_s": rate, "messages": n,
            "achieved_per_s": round(len(run.answered) / wall, 1) if wall > 0 else None,
            "warmup_s": WARMUP_SECONDS, "measured": len(stream),
            "p50_ms": pct(stream, 50), "p90_ms": pct(stream, 90), "p99_ms": pct(stream, 99),
            "max_ms": pct(stream, 100), "p99_all_ms": pct(every, 99),
            "post_p50_ms": pct(post, 50), "post_p99_ms": pct(post, 99),
            "lost": n - len(run.failures) - len(run.arrived), "failed": len(run.failures),
            "first_failure": run.failures[0] if run.failures else None,
            "client_late_p99_ms": pct(late, 99, 1000),
            "client_cpu_pct": round(100 * client_cpu / max(wall, 1e-9)),
            "cpu_ms_a": round(cpu_a * 1000 / n, 3), "cpu_ms_b": round(cpu_b * 1000 / n, 3)}


# -- fan-out --------------------------------------------------------------------


async def fanout_room(w: World, peers: list[str]) -> str:
    """A room hosted by a.test with alice and @u of every server in ``peers`` joined.

    Every peer is a tenant of b.test's process; each gets an admin @u (CLI,
    in threads) who opens its policy, then is invited by alice and accepts.
    """
    limiter = trio.CapacityLimiter(4)
    tokens: dict[str, str] = {}

    async def user(name: str) -> None:
        tokens[name] = await trio.to_thread.run_sync(
            lambda: w.b.create_user("u", admin=True, tenant=name), limiter=limiter)

    async with trio.open_nursery() as nursery:
        for name in peers:
            nursery.start_soon(user, name)
    print(f"bench: fanout: {len(peers)} users created", file=sys.stderr, flush=True)
    # the default (50) is exactly the room's size: raise it out of the way
    policy = {"default_mode": "open", "max_foreign_participants_per_room": 10_000}
    r = await w.ca.put("/v1/admin/federation/policy", json=policy, headers=bearer(w.tokens["ra"]))
    r.raise_for_status()
    for name in peers:
        r = await w.cb.put("/v1/admin/federation/policy", json=policy,
                           headers=bearer(tokens[name]) | {"Host": name})
        r.raise_for_status()
    alice = bearer(w.tokens["alice"])
    r = await w.ca.post("/v1/rooms", json={"name": "fanout", "federate": True}, headers=alice)
    r.raise_for_status()
    room_id: str = r.json()["room_id"]

    async def invite_and_accept(name: str) -> None:
        async with limiter:
            r = await w.ca.post(f"/v1/rooms/{room_id}/invites", json={"fqid": f"@u:{name}"},
                                headers=alice)
            r.raise_for_status()
            await accept_invite(w.cb, tokens[name], 60, host=name, room_id=room_id)

    async with trio.open_nursery() as nursery:
        for name in peers:
            nursery.start_soon(invite_and_accept, name)

    async def joined() -> bool:
        r = await w.ca.get(f"/v1/rooms/{room_id}/members", headers=alice)
        return sum(m["membership"] == "join" for m in r.json()["data"]) == len(peers) + 1

    await wait_for(joined, timeout=120, what="every peer's join")
    return room_id


async def fanout_cost(w: World, room_id: str, peers: int, m: int) -> tuple[float, float, float]:
    """a.test's and b.test's CPU seconds, and the seconds, until ``m`` POSTs reached every peer."""
    counter = SettledCounter.from_now(w.a)
    cpu0, start = (cpu_seconds(w.a), cpu_seconds(w.b)), time.perf_counter()
    await post_messages(w, room_id, m, concurrency=16,
                        body=f"fanout {peers} {{i}}", on_done=progress(f"fanout {peers}:", m))
    await settled(w, counter, m * peers)
    seconds = time.perf_counter() - start
    return cpu_seconds(w.a) - cpu0[0], cpu_seconds(w.b) - cpu0[1], seconds


async def mode_fanout(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    m, n_peers = args.fanout_messages, args.fanout_peers
    peers = ["b.test", *(f"t{i}.test" for i in range(1, n_peers))]
    async with world(root, tenants={"b.test": peers[1:]}) as w:
        big = await fanout_room(w, peers)
        for room in (w.room_id, big):  # warm up both paths
            await post_messages(w, room, 20, concurrency=16)
        await w.drained()
        a1, b1, s1 = await fanout_cost(w, w.room_id, 1, m)
        an, bn, sn = await fanout_cost(w, big, n_peers, m)
    ms = {"1_peer": a1 * 1000 / m, f"{n_peers}_peers": an * 1000 / m}
    return {"mode": "fanout", "messages": m, "peers": n_peers,
            **{f"cpu_ms_per_event_{k}": round(v, 3) for k, v in ms.items()},
            "ratio": round(ms[f"{n_peers}_peers"] / ms["1_peer"], 2),
            "delivered_s_1_peer": round(s1, 2), f"delivered_s_{n_peers}_peers": round(sn, 2),
            "cpu_ms_b_per_event_1_peer": round(b1 * 1000 / m, 3),
            f"cpu_ms_b_per_event_{n_peers}_peers": round(bn * 1000 / m, 3)}


# -- memory ---------------------------------------------------------------------


async def mode_memory(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    n = args.memory_queued
    async with world(root) as w:
        w.b.kill()
        rss: dict[str, float] = {"rss_start_mib": rss_mib(w.a)}
        marks = {max(1, n // 10): "rss_10pct_mib", max(1, n // 2): "rss_50pct_mib",
                 n: "rss_100pct_mib"}
        report = progress("memory: posted", n)

        def on_done(k: int) -> None:
            report(k)
            if k in marks:
                rss[marks[k]] = rss_mib(w.a)

        seconds = await post_messages(w, w.room_id, n, on_done=on_done)
        await trio.sleep(1)  # let the last requests' garbage go
        rss["rss_settled_mib"] = rss_mib(w.a)
        queued = await w.queue_depth()
    return {"mode": "memory", "queued": queued, "post_per_s": round(n / seconds, 1),
            **{k: round(v, 1) for k, v in rss.items()},
            "growth": round(rss["rss_100pct_mib"] / rss["rss_10pct_mib"], 3)}


async def mode_media(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Upload and download MB/s of one file against a plain copy on the same disk."""
    import hashlib

    size = args.media_mib * 1024 * 1024
    block = os.urandom(1024 * 1024)
    extra = {"media": {"max_upload_bytes": size + 1, "user_quota_bytes": 4 * size}}
    async with world(root, extra=extra) as w:
        # the disk's own figure: write the bytes, fsync, copy them, fsync
        src, dst = root / "plain.src", root / "plain.dst"
        with open(src, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        started = time.monotonic()
        shutil.copyfile(src, dst)
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())
        copy_s = time.monotonic() - started
        src.unlink()
        dst.unlink()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // len(block)):
                yield block

        started = time.monotonic()
        r = await w.ca.post("/v1/media", content=body(), headers={
            **bearer(w.tokens["alice"]), "Content-Type": "application/octet-stream",
            "Content-Length": str(size)})
        r.raise_for_status()
        up_s = time.monotonic() - started
        media = r.json()

        async def download(client: httpx.AsyncClient, token: str) -> float:
            digest = hashlib.sha256()
            started = time.monotonic()
            async with client.stream("GET", f"/v1/media/{media['media_id']}",
                                     headers=bearer(token)) as resp:
                resp.raise_for_status()
                async for chunk in resp.aiter_bytes():
                    digest.update(chunk)
            assert digest.hexdigest() == media["sha256"]
            return time.monotonic() - started

        down_s = await download(w.ca, w.tokens["alice"])
        r = await w.ca.post(f"/v1/rooms/{w.room_id}/messages", headers=bearer(w.tokens["alice"]),
                            json={"attachments": [{"media_id": media["media_id"],
                                                   "name": "bench.bin"}]})
        r.raise_for_status()
        event_id = r.json()["event_id"]

        async def arrived() -> bool:
            r = await w.cb.get(f"/v1/rooms/{w.room_id}/messages?limit=5",
                               headers=bearer(w.tokens["bob"]))
            return any(e["event_id"] == event_id for e in r.json()["data"])

        await wait_for(arrived, what="the message at b.test")
        fed_s = await download(w.cb, w.tokens["bob"])  # b.test fetches from a.test first
        cached_s = await download(w.cb, w.tokens["bob"])
    mib = size / 1024 / 1024
    return {"mode": "media", "mib": args.media_mib,
            "copy_mib_per_s": round(mib / copy_s, 1), "upload_mib_per_s": round(mib / up_s, 1),
            "download_mib_per_s": round(mib / down_s, 1),
            "federated_first_mib_per_s": round(mib / fed_s, 1),
            "federated_cached_mib_per_s": round(mib / cached_s, 1),
            "upload_vs_copy": round(copy_s / up_s, 3),
            "download_vs_copy": round(copy_s / down_s, 3)}


MODES = {"floor": mode_floor, "crypto": mode_crypto, "catchup": mode_catchup,
         "latency": mode_latency, "fanout": mode_fanout, "memory": mode_memory,
         "media": mode_media}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["all", *MODES], action="append",
                        help="what to measure (repeatable; default all)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per row")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--queued", type=int, default=10_000,
                        help="catchup: messages queued while b.test is down")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="latency: messages offered per second")
    parser.add_argument("--paced-seconds", type=float, default=6.0,
                        help="latency: how long the paced load lasts")
    parser.add_argument("--fanout-messages", type=int, default=2000,
                        help="fanout: messages posted in each room")
    parser.add_argument("--fanout-peers", type=int, default=50,
                        help="fanout: servers in the big room besides a.test (>= 2)")
    parser.add_argument("--memory-queued", type=int, default=100_000,
                        help="memory: messages queued for the down b.test")
    parser.add_argument("--media-mib", type=int, default=100,
                        help="media: the size of the file moved (MiB)")
    args = parser.parse_args()
    chosen = [m for m in (args.mode or []) if m != "all"] or list(MODES)
    for name in chosen:
        results = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="swfed-bench-") as tmp:
                result = trio.run(MODES[name], Path(tmp), args)
            print(json.dumps(result), flush=True)
            results.append(result)
        if len(results) > 1:
            numeric = [k for k, v in results[0].items() if isinstance(v, (int, float))]
            median = {k: statistics.median(r[k] for r in results) for k in numeric}
            print(json.dumps({"mode": name, "median_of_runs": len(results), **median}),
                  flush=True)


if __name__ == "__main__":
    main()
