"""The login rule (swfed.core.login) at exact times: who may try a password when."""

from __future__ import annotations

import pytest

from swfed.core.login import (
    Attempt,
    LoginLimiter,
    LoginRule,
    Outcome,
    Refusal,
    verification_slots,
)

RULE = LoginRule()
W = RULE.window
DAY = 24 * 3600.0

#: (time, account, address, outcome): attempts reserved and settled at once.
Step = tuple[float, str, str, Outcome]


def fails(account: str, address: str, times: range | list[float]) -> list[Step]:
    return [(float(t), account, address, "failed") for t in times]


def spread(account: str, times: range) -> list[Step]:
    """One failure for ``account`` from a different address at each time."""
    return [(float(t), account, f"10.0.0.{i}", "failed") for i, t in enumerate(times)]


def run(lim: LoginLimiter, history: list[Step]) -> None:
    for t, account, address, outcome in history:
        attempt = lim.reserve(account, address, t)
        assert isinstance(attempt, Attempt), (t, account, address, attempt)
        lim.settle(attempt, outcome, t)


CASES: list[tuple[str, list[Step], tuple[float, str, str], Refusal | None]] = [
    ("four failures leave a fifth try", fails("a", "x", range(4)), (4.0, "a", "x"), None),
    ("five stop the pair until the first has aged out", fails("a", "x", range(5)),
     (10.0, "a", "x"), Refusal("pair", W - 10.0)),
    ("and no longer once it has", fails("a", "x", range(5)), (W, "a", "x"), None),
    ("another address of the same account goes on", fails("a", "x", range(5)),
     (10.0, "a", "y"), None),
    ("another account from the same address goes on", fails("a", "x", range(5)),
     (10.0, "b", "x"), None),
    ("twenty from one address stop it for accounts it has no success for",
     [(float(t), f"acct{t}", "x", "failed") for t in range(20)], (20.0, "new", "x"),
     Refusal("address", W - 20.0)),
    ("but not for an account it is known-good for",
     [(0.0, "z", "x", "ok")] + [(float(t), f"acct{t}", "x", "failed") for t in range(1, 21)],
     (21.0, "z", "x"), None),
    ("thirty for one account from many addresses stop a new address",
     spread("a", range(30)), (30.0, "a", "fresh"), Refusal("account", W - 30.0)),
    ("but not the user's known-good address",
     [(0.0, "a", "home", "ok")] + spread("a", range(1, 31)), (31.0, "a", "home"), None),
    ("a known-good address still meets its own pair bar",
     [(0.0, "a", "home", "ok")] + fails("a", "home", range(1, 6)), (6.0, "a", "home"),
     Refusal("pair", W - 5.0)),
    ("a success forgives the pair's failures before it",
     fails("a", "x", range(4)) + [(4.0, "a", "x", "ok")] + fails("a", "x", range(5, 9)),
     (9.0, "a", "x"), None),
    ("a success does not forgive the account's failures from elsewhere",
     [(0.0, "a", "home", "ok")] + spread("a", range(1, 30)) + [(30.0, "a", "home", "ok")]
     + [(31.0, "a", "10.0.0.99", "failed")], (32.0, "a", "fresh"), Refusal("account", W - 31.0)),
    ("known-good lasts 30 days",
     [(0.0, "a", "home", "ok")] + spread("a", range(int(29 * DAY), int(29 * DAY) + 30)),
     (29 * DAY + 30, "a", "home"), None),
    ("and not longer",
     [(0.0, "a", "home", "ok")] + spread("a", range(int(30 * DAY), int(30 * DAY) + 30)),
     (30 * DAY + 30, "a", "home"), Refusal("account", W - 30.0)),
    ("an attempt never evaluated is forgiven",
     [(float(t), "a", "x", "unevaluated") for t in range(10)], (10.0, "a", "x"), None),
    ("the longest wait is the one reported",
     [(float(t), f"acct{t}", "x", "failed") for t in range(20)] + spread("a", range(50, 80)),
     (80.0, "a", "x"), Refusal("account", W - 30.0)),
]


@pytest.mark.parametrize(("what", "history", "query", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule(what: str, history: list[Step], query: tuple[float, str, str],
              expected: Refusal | None) -> None:
    lim = LoginLimiter()
    run(lim, history)
    now, account, address = query
    assert lim.refusal(account, address, now) == expected
    got = lim.reserve(account, address, now)
    assert (got if isinstance(got, Refusal) else None) == expected


def test_attempts_count_when_they_start_and_two_per_account_run_at_once() -> None:
    lim = LoginLimiter()
    first, second = lim.reserve("a", "x", 0.0), lim.reserve("a", "x", 0.0)
    assert isinstance(first, Attempt) and isinstance(second, Attempt)
    assert lim.reserve("a", "x", 0.0) == Refusal("busy", 1.0)
    assert lim.reserve("a", "y", 0.0) == Refusal("busy", 1.0)  # per account, any address
    assert isinstance(lim.reserve("b", "x", 0.0), Attempt)  # another account is not busy
    lim.settle(first, "failed", 0.1)
    third = lim.reserve("a", "x", 0.1)
    assert isinstance(third, Attempt) and lim.in_flight("a") == 2


def test_forty_at_once_evaluate_at_most_five() -> None:
    """39 wrong and the right one last, arriving faster than Argon2 answers."""
    lim = LoginLimiter()
    running: list[Attempt] = []
    evaluated = 0
    answers = []
    for i in range(40):
        now = i * 0.01  # one every 10 ms; each verification takes 50 ms
        while running and running[0].at + 0.05 <= now:
            lim.settle(running.pop(0), "failed", now)
            evaluated += 1
        got = lim.reserve("victim", "x", now)
        answers.append("429" if isinstance(got, Refusal) else "run")
        if isinstance(got, Attempt):
            running.append(got)
    evaluated += len(running)
    assert evaluated <= RULE.per_pair and answers[-1] == "429"


def test_in_flight_counts_are_dropped_at_zero() -> None:
    lim = LoginLimiter()
    attempt = lim.reserve("a", "x", 0.0)
    assert isinstance(attempt, Attempt)
    lim.settle(attempt, "ok", 0.0)
    assert lim.in_flight("a") == 0 and lim.known_good("a", "x", 0.0)
    assert lim.remembered() == 1  # only the known-good pair


def test_memory_is_bounded() -> None:
    lim = LoginLimiter(max_keys=100)
    for i in range(10_000):
        run(lim, [(float(i), f"acct{i}", f"addr{i}", "failed"),
                  (float(i), f"user{i}", f"home{i}", "ok")])
        assert lim.remembered() <= 2 * 100
    # keys are dropped as time passes, a few at each call
    for i in range(100):
        run(lim, [(1e7 + i, "late", "addr", "unevaluated")])
    assert lim.remembered() == 0


def test_times_per_key_are_bounded_by_twice_the_bar() -> None:
    lim = LoginLimiter()
    run(lim, [(0.0, "a", "home", "ok")] + fails("a", "home", range(1, 5))
        + [(5.0, "a", "home", "ok")])
    # a known-good address keeps adding failures to the account's count past its bar
    for t in range(100):
        for _ in range(4):
            attempt = lim.reserve("a", "home", 6.0 + t)
            assert isinstance(attempt, Attempt)
            lim.settle(attempt, "failed", 6.0 + t)
        attempt = lim.reserve("a", "home", 6.0 + t)
        assert isinstance(attempt, Attempt)
        lim.settle(attempt, "ok", 6.0 + t)
    assert RULE.per_account <= len(lim._times[("account", "a")]) <= 2 * RULE.per_account
    # the 30th most recent failure is at 98
    assert lim.refusal("a", "new", 106.0) == Refusal("account", 98.0 + W - 106.0)


def test_verification_slots_follow_argon2s_memory() -> None:
    assert verification_slots(64 * 1024) == 4  # argon2-cffi's default: 64 MiB
    assert verification_slots(1024 * 1024) == 1  # never fewer than one
    assert verification_slots(47 * 1024, budget_kib=256 * 1024) == 5


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        LoginRule(per_pair=0)
    with pytest.raises(ValueError):
        LoginRule(window=0)
    with pytest.raises(ValueError):
        LoginLimiter(max_keys=0)
