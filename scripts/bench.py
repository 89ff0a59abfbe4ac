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


async def accept_invite(client: httpx.AsyncClient, token: str, timeout: float = 30) -> None:
    """Wait for the user's (first) pending invite and accept it."""
    async def invite() -> str | None:
        r = await client.get("/v1/me/notifications", headers=bearer(token))
        ids = [n["invite_id"] for n in r.json()["data"] if n.get("invite_id")]
        return ids[0] if ids else None

    iid = await wait_for(invite, what="an invite", timeout=timeout)
    r = await client.post(f"/v1/me/invites/{iid}/accept", headers=bearer(token))
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
        [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script),
         url], capture_stdout=True, capture_stderr=True)
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


MODES = {"floor": mode_floor, "crypto": mode_crypto}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["all", *MODES], action="append",
                        help="what to measure (repeatable; default all)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per row")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
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
