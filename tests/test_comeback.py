"""Come back, catch up: a server that starts again is caught up within seconds.

``b.test`` is down long enough for ``a.test``'s queue to it to be well into
its backoff (four failed attempts: the next one is 13-19 s away, and the
admin peers view shows when). When b starts, it announces itself to a (a
signed probe to every peer it shares a room with); a resets its backoff and
delivers at once -- long before the retry it had scheduled.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

from tests.conftest import peer_row
from tests.harness import wait_for
from tests.test_federation_delivery import (
    _equals,
    clients,
    dm_queued_while_b_is_down,
    history,
    setup_pair,
)


def epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


async def test_restarted_peer_is_caught_up_without_waiting_for_the_backoff(
        tmp_path: Path) -> None:
    net, a, b, tokens = await setup_pair(tmp_path)
    try:
        ca, cb = clients(net, a, b)
        async with ca, cb:
            room_id = await dm_queued_while_b_is_down(ca, cb, tokens, b, "while away", 20)

            async def backed_off() -> Any:
                row = await peer_row(ca, tokens["admin_a"], "b.test")
                return row if row["failures"] >= 4 and row["next_retry_at"] else None

            row = await wait_for(backed_off, timeout=40, what="a.test backing off from b.test")
            retry_at = epoch(row["next_retry_at"])
            assert retry_at - time.time() > 8, row  # a long wait is ahead

            b.start()
            listening = time.time()
            expected = [f"while away {i}" for i in range(20)]
            await wait_for(lambda: _equals(history(cb, tokens["bob"], room_id), expected),
                           timeout=30, what="a's queued messages on b")
            caught_up = time.time()
            print(f"caught up {caught_up - listening:.2f} s after b.test listened; "
                  f"a.test's next retry was {retry_at - listening:.1f} s away")
            assert caught_up < retry_at - 1, "delivered only at the scheduled retry"
            assert caught_up - listening < 5
        announced = b.logs("federation.announced")
        assert announced and announced[0]["reached"] == 1, announced

        # a peer that is down too is only logged: the server starts and serves
        assert b.stop() == 0
        a.stop()
        a.start()
        await wait_for(lambda: a.logs("federation.announced"), what="a's announcements done")
        assert a.logs("federation.announced")[-1]["failed"] == 1
        failed = a.logs("federation.announce.failed")
        assert failed and "b.test" == failed[-1]["peer"], failed
        assert not any("Traceback" in line for line in a.log_lines)
    finally:
        a.kill()
        b.kill()
