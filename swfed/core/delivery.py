"""What a peer's answer to ``/send`` settles: pure classification (DESIGN §6, §10).

Per event, the receiver answers ``{}`` or ``{"seq": n}`` (stored, or already
had), or ``{"error": {"code", "message", "transient"?}}``. A refusal is
*final* unless it says ``"transient": true`` (the receiver could not decide
now: a third server's key out of reach, its storage unavailable); a
transient one stays queued and is sent again. An event the answer does not
mention stays queued too. An answer that settles nothing — no event
delivered or refused for good — is a failed attempt, with backoff, so a
peer that answers ``{"results": {}}`` cannot make us spin.

Order across ``/send``: when a queue has a second ``/send`` in flight, it
names the last event of the one before it (``after``: its room and event
id). The receiver stores none of it until that event is stored or refused
there: it answers each event transient :data:`OUT_OF_ORDER` (the first
request failed or has not arrived; a host restarted between them), so a
failed first batch can never be ordered after the one behind it. A batch
deferred for its ``after`` goes again at once, from the oldest queued row
and then without ``after`` (nothing before it is unanswered): no spin.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

#: Whole ``/send`` bodies stay under this many bytes of events (one event
#: is always sent, however large, so nothing can block a queue).
BATCH_BYTES = 512 * 1024
#: And at most this many events (the receiver's limit).
BATCH_EVENTS = 100


@attrs.frozen
class Refusal:
    code: str
    message: str


@attrs.frozen
class Settled:
    """``delivered``: event id → the host's seq (if it gave one); the rest by kind."""

    delivered: dict[str, int | None]
    refused: dict[str, Refusal]
    transient: dict[str, Refusal]

    @property
    def settles_anything(self) -> bool:
        return bool(self.delivered or self.refused)


#: The transient code of an event held back for one sent before it (``after``, or an
#: event before it in the same /send that could not be taken now).
OUT_OF_ORDER = "SW_FED_OUT_OF_ORDER"


def deferred_for_order(settled: Settled) -> bool:
    """The answer holds every event back for one sent before them, and settles nothing."""
    return (not settled.settles_anything and bool(settled.transient)
            and all(r.code == OUT_OF_ORDER for r in settled.transient.values()))


def _seq(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def classify(event_ids: list[str], results: Any) -> Settled:
    """Sort each event we sent by what the answer says of it."""
    delivered: dict[str, int | None] = {}
    refused: dict[str, Refusal] = {}
    transient: dict[str, Refusal] = {}
    answers = results if isinstance(results, dict) else {}
    for event_id in event_ids:
        result = answers.get(event_id)
        if not isinstance(result, dict):
            continue
        error = result.get("error")
        if error is None:
            delivered[event_id] = _seq(result.get("seq"))
            continue
        error = error if isinstance(error, dict) else {}
        refusal = Refusal(str(error.get("code") or "SW_FED_ERROR")[:64],
                          str(error.get("message", ""))[:500])
        if error.get("transient") is True:
            transient[event_id] = refusal
        else:
            refused[event_id] = refusal
    return Settled(delivered, refused, transient)


def take_batch(sizes: list[int], *, max_bytes: int = BATCH_BYTES,
               max_events: int = BATCH_EVENTS) -> int:
    """How many of the queued events (their encoded sizes, in order) go in one ``/send``."""
    total = 0
    for n, size in enumerate(sizes[:max_events]):
        if n and total + size > max_bytes:
            return n
        total += size
    return min(len(sizes), max_events)


def send_body(origin: str, txn_id: str, events: list[bytes],
              after: tuple[str, str] | None = None) -> bytes:
    """The canonical JSON of a /send body, ``{"after"?:…,"events":[…],"origin":…,"txn_id":…}``,
    joined from events already encoded canonically (keys in code point order).

    ``after``: (room id, event id) of the last event of the ``/send`` still in
    flight before this one, if any.
    """
    head = b'{'
    if after is not None:
        head += b'"after":{"event_id":' + json.dumps(after[1], ensure_ascii=False).encode() + (
            b',"room_id":' + json.dumps(after[0], ensure_ascii=False).encode() + b'},')
    return b"".join((head, b'"events":[', b",".join(events), b'],"origin":',
                     json.dumps(origin, ensure_ascii=False).encode(), b',"txn_id":',
                     json.dumps(txn_id, ensure_ascii=False).encode(), b"}"))
