"""Keys that keep history readable: two real servers, many rotations, a long absence.

``a.test`` hosts a DM with ``b.test``. a rotates its key three times with
messages in between (each era signed by another key), then b goes down,
a queues messages signed by its fourth key and rotates again. Both come back
400 days later (``SWFED_TEST_CLOCK_OFFSET_MS``): every overlap has ended and
every retired key is more than a year past it. The queued messages are still
delivered, and backfill of the whole history verifies, key by key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import bearer, peer_row
from tests.harness import ServerProcess, wait_for
from tests.test_federation_delivery import (
    _equals,
    clients,
    dm,
    history,
    open_policies,
    send_many,
    setup_pair,
)

DAY_MS = 24 * 3600 * 1000


async def key_id(client: httpx.AsyncClient) -> str:
    r = await client.get("/.well-known/scaiwave/server", headers={"Host": "a.test"})
    return str(r.json()["key_id"])


async def rotate(a: ServerProcess, ca: httpx.AsyncClient) -> str:
    new = str(json.loads(a.cli("admin", "federation", "key", "rotate", "--json").stdout)["key_id"])

    async def serving() -> bool:
        return await key_id(ca) == new

    await wait_for(serving, what=f"a.test signing with {new}")
    return new


async def test_history_verifies_after_many_rotations_and_queued_events_arrive(
        tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    alice = tokens["alice"]
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            await open_policies(ca, cb, tokens)
            room_id = await dm(ca, cb, tokens)
            expected: list[str] = []
            signed_by = [await key_id(ca)]
            for era in range(3):
                await send_many(ca, alice, room_id, f"era {era}", 2)
                expected += [f"era {era} 0", f"era {era} 1"]
                await wait_for(lambda want=list(expected): _equals(  # type: ignore[misc]
                    history(cb, tokens["bob"], room_id), want), what=f"era {era} on b")
                signed_by.append(await rotate(a, ca))
            # b goes away; a queues messages signed by its fourth key, then retires it
            assert b.stop() == 0
            await send_many(ca, alice, room_id, "queued", 2)
            expected += ["queued 0", "queued 1"]
            await rotate(a, ca)
        a.stop()

        # 400 days later, for both: every overlap ended more than a year ago
        for server in (a, b):
            server.env["SWFED_TEST_CLOCK_OFFSET_MS"] = str(400 * DAY_MS)
        a.start()
        b.start()
        ca, cb = clients(net, a, b)
        async with ca, cb:
            desc = (await ca.get("/.well-known/scaiwave/server",
                                 headers={"Host": "a.test"})).json()
            old = {k["key_id"]: k for k in desc["old_keys"]}
            assert set(signed_by) <= set(old), "every retired key stays published"
            assert all(isinstance(k["retired_at"], int) and k["expires_at"] < k["retired_at"]
                       + 31 * DAY_MS for k in old.values())

            # the events queued under a key that has since retired are delivered
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), expected),
                           timeout=30, what="the queued messages on b")

            async def drained() -> bool:
                row = await peer_row(ca, tokens["admin_a"], "b.test")
                return row["queue_depth"] == 0

            # (b stores before a records the delivery: wait for a's side too)
            await wait_for(drained, what="a's queue to b drained")
            # no event was refused (a request signed with a key b had not fetched
            # yet may be, while the rotations come faster than b refetches: retried)
            r = await cb.get("/v1/admin/federation/rejected", headers=bearer(tokens["admin_b"]))
            assert [row for row in r.json()["data"] if row["event_id"]] == []

            # and the whole history, signed by every retired key, verifies on backfill.
            # (b rotated its own key on waking: a request signed with it may meet a's
            # copy of b's descriptor fetched just before, and be refused until a may
            # refetch, 2 s later; the admin tries again, as its message says.)
            async def backfilled() -> dict[str, Any] | None:
                r = await cb.post(f"/v1/admin/rooms/{room_id}/federation/backfill",
                                  headers=bearer(tokens["admin_b"]))
                if r.status_code == 401:
                    assert r.json()["error"]["code"] == "SW_FED_SIGNATURE_MISMATCH", r.text
                    return None
                assert r.status_code == 200, r.text
                return dict(r.json())

            pulled = await wait_for(backfilled, what="b's backfill from a")
            assert pulled["refused"] == 0, pulled
            assert pulled["pulled"] >= len(expected)
    finally:
        a.kill()
        b.kill()
