"""Requests of one peer store in the order they came; other peers never wait."""

from __future__ import annotations

import trio
import trio.testing

from swfed.federation.turns import Turn, Turns


async def test_each_turn_waits_for_the_ones_before_it_only() -> None:
    turns = Turns()
    order: list[str] = []
    first, second, third = (turns.take(("t", "a.test")) for _ in range(3))
    other = turns.take(("t", "b.test"))

    async def store(name: str, turn: Turn) -> None:
        await turn.wait()
        order.append(name)
        turn.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store, "third", third)
        nursery.start_soon(store, "second", second)
        nursery.start_soon(store, "other", other)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["other"]  # another peer does not wait
        first.end()  # however the first request ended (stored, refused, cancelled)
    assert order == ["other", "second", "third"]
    assert len(turns) == 0  # nothing kept once a peer's requests are done


async def test_a_turn_taken_after_all_ended_does_not_wait() -> None:
    turns = Turns()
    turns.take("k").end()
    with trio.fail_after(1):
        await turns.take("k").wait()
