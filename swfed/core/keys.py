"""When a signing key may sign and verify what (DESIGN §3): pure rules over times.

Every Ed25519 key, ours or a peer's, lives one life (times in ms)::

    created ──── current: signs everything ──── retired_at ── overlap ── expires_at ──▶
                                                    │                        │
         events it signed (origin_ts <= retired_at) verify forever           │
         live requests signed with it verify only until expires_at ──────────┘

- A *current* key (``retired_at`` unset) verifies everything.
- A *live request* (the ``SW-Fed`` header of a request arriving now) needs a
  current key or one still in its overlap (``now < expires_at``): a retired
  key must not keep opening doors.
- An *event* verifies with the key that was current when it was made: its
  ``origin_ts`` is at or before the key's ``retired_at`` (plus
  ``SIGNING_GRACE_MS``: a running server picks a rotation made with the CLI up
  at its next key reload, seconds later, and signs with the old key until
  then; those events must stay readable too). That holds however
  long ago the key retired and however many rotations followed, so history
  stays readable on backfill and events queued while a peer was away are
  still delivered after the overlap ended. During the overlap an event
  signed with the old key after the rotation is still accepted (a sender
  that had not reloaded its key yet).
- Retired keys stay published (public half, with ``retired_at``) for as long
  as the events they signed can be asked for: for ever. Only the private half
  goes, once the overlap ends (:func:`seed_expired`).

Who may vouch for a key (:func:`key_believed`): a server's keys are believed
only from that server itself, its descriptor fetched from its own name with
TLS verified for that name. A copy held by anyone else -- a room's host
relaying the server's events, a peer answering ``descriptors/{name}`` -- is a
claim by that third party, which could as well hold a key of its own: it
never verifies an event, never authenticates a request, is never stored and
never replaces, retires or extends what the server published itself. An
event whose origin we cannot reach and whose key we did not learn from it
waits (the relay retries) until the origin answers.

These functions take plain values and the time; they never look at a clock.
"""

from __future__ import annotations

import attrs

DAY_MS = 24 * 3600 * 1000
#: How long after ``retired_at`` an event signed with the old key is still
#: "made while it was current": the server reloads its keys every 2 s, and
#: this is the same tolerance as the clock skew allowed on requests.
SIGNING_GRACE_MS = 60_000


@attrs.frozen
class KeyInfo:
    """One key as a descriptor lists it (public half only)."""

    key_id: str
    public_key: str  # unpadded base64 of the 32-byte Ed25519 key
    retired_at: int | None = None
    expires_at: int | None = None

    @property
    def current(self) -> bool:
        return self.retired_at is None

    def usable_live(self, now: int) -> bool:
        """May it verify a live request arriving at ``now``? (:func:`verifies_request`)"""
        return verifies_request(self, now)

    def usable_for_event(self, origin_ts: int, now: int) -> bool:
        """May it verify an event made at ``origin_ts``? (:func:`verifies_event`)"""
        return verifies_event(self, origin_ts, now)


#: What a key learnt from some server may be used for.
KEY_USES = ("verify_event", "authenticate_request", "store", "serve_to_peers")


def key_believed(learnt_from: str, server_name: str, use: str) -> bool:
    """May a key of ``server_name``, learnt from ``learnt_from``, serve ``use``?

    Both names canonical. Only the server itself vouches for its keys, for
    every use alike: a third party's copy is never believed (module docstring).
    """
    if use not in KEY_USES:
        raise ValueError(f"unknown key use {use!r}")
    return learnt_from == server_name


def in_overlap(key: KeyInfo, now: int) -> bool:
    """Retired, but its overlap has not ended yet."""
    return key.retired_at is not None and key.expires_at is not None and now < key.expires_at


def verifies_request(key: KeyInfo, now: int) -> bool:
    """A live request signed with ``key`` at ``now``: current or in its overlap."""
    return key.current or in_overlap(key, now)


def verifies_event(key: KeyInfo, origin_ts: int, now: int) -> bool:
    """An event made at ``origin_ts``: signed while the key was current, or in the overlap."""
    if key.current or in_overlap(key, now):
        return True
    assert key.retired_at is not None
    return origin_ts <= key.retired_at + SIGNING_GRACE_MS


def refusal(key: KeyInfo, server_name: str, *, origin_ts: int | None = None) -> str:
    """Why ``key`` may not verify a request (``origin_ts`` None) or an event, in words."""
    retired = f"key {key.key_id} of {server_name} stopped signing at {key.retired_at}"
    overlap = f"its overlap ended at {key.expires_at}"
    if origin_ts is None:
        return (f"{retired} and {overlap}: live requests need its current key; "
                f"{server_name} should sign with its current key")
    return (f"{retired}, {overlap}, and the event is from {origin_ts}, after that: "
            "an event must be signed with the key that was current when it was made")


def retire(now: int, overlap_days: int) -> tuple[int, int]:
    """(retired_at, expires_at) of a key replaced at ``now``."""
    return now, now + overlap_days * DAY_MS


def rotation_due(created_at: int | None, now: int, rotation_days: int) -> bool:
    """Is a current key made at ``created_at`` due for its scheduled rotation?"""
    return created_at is not None and now >= created_at + rotation_days * DAY_MS


def seed_expired(expires_at: int | None, now: int) -> bool:
    """May the private half of a retired key be wiped? (its overlap has ended)"""
    return expires_at is not None and expires_at <= now


def published(keys: list[KeyInfo]) -> list[KeyInfo]:
    """The retired keys a descriptor lists: every one, newest retirement first.

    None is ever dropped: a peer may ask for history they signed at any time.
    """
    retired = [k for k in keys if not k.current]
    return sorted(retired, key=lambda k: k.retired_at or 0, reverse=True)
