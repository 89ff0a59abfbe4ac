"""Federation benchmark (run it with scripts/bench).

Starts two swfed processes with TLS (a trustme CA) on 127.0.0.1, opens
policies, makes a federated DM between @alice:a.test and @bob:b.test, then
sends N messages from alice with C in flight. Bob's event stream on b.test
timestamps each arrival. Prints one JSON line per run and, with --runs > 1,
a last line with the median of each figure:

- delivered_events_per_s: N / (last arrival on b - first send on a)
- p50_ms, p99_ms: send-to-stored latency (POST on a starts -> event on b's stream)
- sign_per_s, verify_per_s: Ed25519 signing-JSON rates on this machine, now
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swfed.core.signing import generate_keypair, sign_json, verify_signed_json  # noqa: E402
from tests.harness import federated_servers, wait_for  # noqa: E402


def crypto_rates(seconds: float = 0.5) -> tuple[float, float]:
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


async def one_run(root: Path, messages: int, concurrency: int) -> dict[str, Any]:
    # log_level info: the harness waits for the server.listening line
    net, (a, b) = federated_servers(root, ["a.test", "b.test"],
                                    extra={n: {"server": {"log_level": "info"}}
                                           for n in ("a.test", "b.test")})
    a.start()
    b.start()
    try:
        tok = {"ra": a.create_user("root", admin=True), "alice": a.create_user("alice"),
               "rb": b.create_user("root", admin=True), "bob": b.create_user("bob")}
        ctx = net.ssl_context()
        limits = httpx.Limits(max_connections=concurrency + 2)
        async with httpx.AsyncClient(base_url=a.url, verify=ctx, timeout=60,
                                     limits=limits) as ca, \
                httpx.AsyncClient(base_url=b.url, verify=ctx, timeout=60) as cb:
            for c, t in ((ca, tok["ra"]), (cb, tok["rb"])):
                await c.put("/v1/admin/federation/policy", json={"default_mode": "open"},
                            headers=bearer(t))
            r = await ca.post("/v1/me/federated-dms", json={"fqid": "@bob:b.test"},
                              headers=bearer(tok["alice"]))
            room_id = r.json()["room_id"]

            async def invite() -> str | None:
                r = await cb.get("/v1/me/notifications", headers=bearer(tok["bob"]))
                ids = [n["invite_id"] for n in r.json()["data"] if n.get("invite_id")]
                return ids[0] if ids else None

            iid = await wait_for(invite, what="invite")
            await cb.post(f"/v1/me/invites/{iid}/accept", headers=bearer(tok["bob"]))

            async def joined() -> bool:
                r = await ca.get(f"/v1/rooms/{room_id}/members", headers=bearer(tok["alice"]))
                return sum(m["membership"] == "join" for m in r.json()["data"]) == 2

            await wait_for(joined, what="join")

            sent: dict[str, float] = {}
            arrived: dict[str, float] = {}
            started_at: dict[int, float] = {}
            done = trio.Event()

            async def watch(task_status: trio.TaskStatus[None]) -> None:
                async with cb.stream("GET", "/v1/me/stream", headers=bearer(tok["bob"])) as s:
                    task_status.started()
                    async for line in s.aiter_lines():
                        if line.startswith("data: "):
                            data = json.loads(line[6:])
                            body = data.get("content", {}).get("body", "")
                            if data.get("type") == "message" and body.startswith("bench "):
                                arrived[body] = time.perf_counter()
                                if len(arrived) == messages:
                                    done.set()
                                    return

            async def sender(worker: int, queue: trio.MemoryReceiveChannel[int]) -> None:
                async for i in queue:
                    body = f"bench {i}"
                    started_at[i] = time.perf_counter()
                    r = await ca.post(f"/v1/rooms/{room_id}/messages", json={"body": body},
                                      headers=bearer(tok["alice"]))
                    assert r.status_code == 201, r.text
                    sent[body] = started_at[i]

            async with trio.open_nursery() as nursery:
                await nursery.start(watch)
                send_ch, recv_ch = trio.open_memory_channel[int](messages)
                for i in range(messages):
                    send_ch.send_nowait(i)
                send_ch.close()
                t0 = time.perf_counter()
                async with trio.open_nursery() as senders:
                    for w in range(concurrency):
                        senders.start_soon(sender, w, recv_ch.clone())
                with trio.fail_after(300):
                    await done.wait()
                nursery.cancel_scope.cancel()
            latencies = sorted((arrived[k] - sent[k]) * 1000 for k in arrived)
            elapsed = max(arrived.values()) - t0
        sign_rate, verify_rate = crypto_rates()
        return {
            "messages": messages,
            "concurrency": concurrency,
            "delivered_events_per_s": round(messages / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
            "sign_per_s": round(sign_rate),
            "verify_per_s": round(verify_rate),
        }
    finally:
        a.kill()
        b.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="swfed-bench-") as tmp:
            result = trio.run(one_run, Path(tmp), args.messages, args.concurrency)
        print(json.dumps(result), flush=True)
        results.append(result)
    if len(results) > 1:
        median = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(json.dumps({"median_of_runs": len(results), **median}), flush=True)


if __name__ == "__main__":
    main()
