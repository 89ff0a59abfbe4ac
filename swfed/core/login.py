"""Who may try a password, and when: the login limits as a rule over times.

Nothing here reads a clock or does I/O: the caller passes ``now`` (seconds on
any monotonic clock) and gets a decision, so ``tests/core/test_login.py``
states exact times. ``swfed.api.auth`` applies it to ``POST /v1/login``.

The rule
--------

An attempt is for an *account* (tenant, local id) from an *address* (the
client address the server sees). Failures are counted in a sliding
:attr:`LoginRule.window` (300 s):

1. **Per (account, address)**: at most ``per_pair`` (5) failures. This is
   what a guesser meets, and it stops only the address that failed.
2. **Per address**, over all accounts: at most ``per_address`` (20)
   failures (one address trying many accounts).
3. **Per account**, over all addresses: at most ``per_account`` (30)
   failures (many addresses trying one account: 30 guesses per 5 minutes
   whatever the number of addresses, about 8,600 a day).
4. An address that has signed in to the account within
   ``known_good_seconds`` (30 days) is a *known-good* address for it: bars 2
   and 3 do not apply to it, only its own bar 1. Someone else's failures,
   however many and from wherever, never keep people out of the account from
   where they usually sign in; a new address meets all three bars.
5. At most ``in_flight_per_account`` (2) attempts per account are being
   verified at once; more are refused as busy, to try again in
   ``busy_retry_seconds`` (1 s). Argon2 costs 64 MiB per verification, so
   this also bounds what one account's attempts can hold.

Attempts are counted when they *start*, not when Argon2 answers:
:meth:`LoginLimiter.reserve` records the attempt as a failure at once
(atomically, in the caller's event loop, before any hashing), and
:meth:`LoginLimiter.settle` later forgives it when the password was right
(and then also forgets the pair's earlier failures and marks the address
known-good) or when it was never evaluated (storage trouble, the client
went away). Forty concurrent attempts therefore see each other: at most
``per_pair`` of them are ever verified.

Compared with Synapse's ``rc_login``: ``address`` there is our bar 2,
``failed_attempts`` (per account, 3 at once then one per 6 s) our bar 3, but
Synapse's bar 3 locks the account for everyone, which lets anyone keep a
user out for ever with a few wrong passwords a minute. Rule 4 is the
"device cookie" idea of OWASP's guidance, keyed by address because API
clients keep no cookies.

The address is the client's as :func:`swfed.context.client_address` finds
it: the peer address of the connection, or behind one of ``[server]
trusted_proxies`` the client its ``X-Forwarded-For`` names. Behind a proxy
not listed there every client has the proxy's address, so bar 1 becomes 5
failures per account for everyone (the lockout of before) and bar 2 20 per
server; rule 4 cannot tell people apart there.

Overall, :func:`verification_slots` bounds how many verifications run at
once by the memory they hold (Argon2's ``memory_cost`` each).

Refusals are :class:`Refusal` (a reason and seconds to wait), which the
caller answers as 429 ``SW_RATE_LIMITED`` with ``Retry-After``.

Memory is bounded: at most ``max_keys`` counted keys (pair, address or
account) and ``max_keys`` known-good pairs, the least recently touched going
first (forgetting a key can only help it, which is why the cap is far above
honest use); each key holds at most ``2 × its bar`` times; in-flight counts
exist only while attempts run.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Hashable
from typing import Literal

import attrs

#: Least recently used keys looked at per call for expiry (amortised cleanup).
SWEEP_PER_CALL = 4
#: Argon2 memory that all password verifications at once may hold, in KiB.
ARGON2_BUDGET_KIB = 256 * 1024
#: Verifications that may wait for a slot, per slot; past them an attempt is refused.
WAITING_PER_SLOT = 4

Outcome = Literal["ok", "failed", "unevaluated"]
Reason = Literal["pair", "address", "account", "busy"]


@attrs.frozen
class LoginRule:
    """The bars of the module docstring (counts per ``window`` seconds)."""

    window: float = 300.0
    per_pair: int = 5
    per_address: int = 20
    per_account: int = 30
    known_good_seconds: float = 30 * 24 * 3600.0
    in_flight_per_account: int = 2
    busy_retry_seconds: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not (self.window > 0 and min(self.per_pair, self.per_address, self.per_account,
                                        self.in_flight_per_account) >= 1):
            raise ValueError(f"a login rule needs a window > 0 and bars >= 1, got {self!r}")


@attrs.frozen
class Refusal:
    """Not now: ``reason`` (which bar) and ``retry_after`` seconds (> 0)."""

    reason: Reason
    retry_after: float


@attrs.frozen
class Attempt:
    """A reserved attempt, to be settled exactly once."""

    account: Hashable
    address: str
    at: float


def verification_slots(memory_cost_kib: int, budget_kib: int = ARGON2_BUDGET_KIB) -> int:
    """How many Argon2 computations may run at once within ``budget_kib`` (at least 1).

    argon2-cffi's default ``memory_cost`` is 64 MiB, so 256 MiB allows 4: on
    the 2-core machines swfed is sized for, more would not finish sooner.
    """
    return max(1, budget_kib // max(1, memory_cost_kib))


def _pair(account: Hashable, address: str) -> tuple[str, Hashable, str]:
    return ("pair", account, address)


class LoginLimiter:
    """The rule's state: failure times per key, known-good pairs, attempts in flight."""

    def __init__(self, rule: LoginRule | None = None, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rule = rule or LoginRule()
        self.max_keys = max_keys
        self._times: collections.OrderedDict[Hashable, collections.deque[float]] = (
            collections.OrderedDict())
        self._known: collections.OrderedDict[tuple[Hashable, str], float] = (
            collections.OrderedDict())
        self._in_flight: dict[Hashable, int] = {}

    # -- reading ---------------------------------------------------------

    def _recent(self, key: Hashable, now: float) -> collections.deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.rule.window:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def _wait(self, key: Hashable, limit: int, now: float) -> float:
        """Seconds until ``key`` has fewer than ``limit`` failures in the window (0: now)."""
        times = self._recent(key, now)
        if times is None or len(times) < limit:
            return 0.0
        return times[len(times) - limit] + self.rule.window - now

    def known_good(self, account: Hashable, address: str, now: float) -> bool:
        """Whether ``address`` signed in to ``account`` within ``known_good_seconds``."""
        at = self._known.get((account, address))
        return at is not None and now - at < self.rule.known_good_seconds

    def in_flight(self, account: Hashable) -> int:
        return self._in_flight.get(account, 0)

    def remembered(self) -> int:
        """Keys held (counted, known-good, in flight): what the memory caps bound."""
        return len(self._times) + len(self._known) + len(self._in_flight)

    def refusal(self, account: Hashable, address: str, now: float) -> Refusal | None:
        """Why an attempt for ``account`` from ``address`` may not start now, or None."""
        rule = self.rule
        bars: list[tuple[Reason, Hashable, int]] = [
            ("pair", _pair(account, address), rule.per_pair)]
        if not self.known_good(account, address, now):
            bars += [("address", ("address", address), rule.per_address),
                     ("account", ("account", account), rule.per_account)]
        worst: Refusal | None = None
        for reason, key, limit in bars:
            wait = self._wait(key, limit, now)
            if wait > 0 and (worst is None or wait > worst.retry_after):
                worst = Refusal(reason, wait)
        if worst is None and self.in_flight(account) >= rule.in_flight_per_account:
            worst = Refusal("busy", rule.busy_retry_seconds)
        return worst

    # -- changing --------------------------------------------------------

    def _keys(self, attempt: Attempt) -> list[tuple[Hashable, int]]:
        rule = self.rule
        return [(_pair(attempt.account, attempt.address), rule.per_pair),
                (("address", attempt.address), rule.per_address),
                (("account", attempt.account), rule.per_account)]

    def reserve(self, account: Hashable, address: str, now: float) -> Attempt | Refusal:
        """Count an attempt as a failure from now on, unless it is refused.

        The caller must :meth:`settle` the attempt it gets, whatever happens.
        """
        refused = self.refusal(account, address, now)
        if refused is not None:
            return refused
        attempt = Attempt(account, address, now)
        for key, limit in self._keys(attempt):
            times = self._recent(key, now)
            if times is None:
                times = self._times[key] = collections.deque(maxlen=2 * limit)
            times.append(now)
            self._times.move_to_end(key)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)
        self._in_flight[account] = self.in_flight(account) + 1
        self._sweep(now)
        return attempt

    def settle(self, attempt: Attempt, outcome: Outcome, now: float) -> None:
        """The attempt's end: a failure stays counted; a success or an attempt never
        evaluated is forgiven, and a success forgets its pair's failures and makes
        its address known-good for the account."""
        count = self.in_flight(attempt.account) - 1
        if count > 0:
            self._in_flight[attempt.account] = count
        else:
            self._in_flight.pop(attempt.account, None)
        if outcome == "failed":
            return
        for key, _ in self._keys(attempt):
            times = self._times.get(key)
            if times is not None:
                try:
                    times.remove(attempt.at)
                except ValueError:  # aged out or forgotten meanwhile: nothing to forgive
                    pass
                if not times:
                    del self._times[key]
        if outcome == "ok":
            self._times.pop(_pair(attempt.account, attempt.address), None)
            pair = (attempt.account, attempt.address)
            self._known[pair] = now
            self._known.move_to_end(pair)
            while len(self._known) > self.max_keys:
                self._known.popitem(last=False)

    def _sweep(self, now: float) -> None:
        """Drop expired entries among the least recently used few (keeps calls O(1))."""
        for key in list(itertools.islice(self._times, SWEEP_PER_CALL)):
            self._recent(key, now)
        for pair in list(itertools.islice(self._known, SWEEP_PER_CALL)):
            if now - self._known[pair] >= self.rule.known_good_seconds:
                del self._known[pair]
